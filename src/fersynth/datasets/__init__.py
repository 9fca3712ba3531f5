"""Dataset sources and the on-disk dataset format shared by every image stage."""
