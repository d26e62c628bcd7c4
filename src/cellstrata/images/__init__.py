"""The image levels: raw images to their manifest, image QC, illumination functions and corrected
images."""
