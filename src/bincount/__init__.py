"""bincount: count objects in warehouse bin images (Amazon Bin Image Dataset) with Lightning, Hydra and timm."""
