"""A small TFLite writer and int8 post-training quantizer (numpy + flatbuffers, builtin ops only)."""
