"""Perceptual controls (Gatys et al. 2017): colour preservation (`color`) and coarse-to-fine (`pyramid`)."""
