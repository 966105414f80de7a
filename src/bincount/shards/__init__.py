"""Shards for streaming: ``pack`` writes them (``bincount pack``), ``stream`` reads them into training."""
