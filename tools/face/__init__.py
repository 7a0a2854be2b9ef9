"""Face verification: embedding training on LFW train people and the LFW View-2 pair protocol."""
