"""Data: the ABID layout reader, manifests, synthetic bins, transforms and the DataModule."""
