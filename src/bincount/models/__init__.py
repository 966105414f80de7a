"""Backbones, counting heads and the LightningModule that joins them."""
