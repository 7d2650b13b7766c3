//! pibake: reproducible Raspberry Pi cluster images.
