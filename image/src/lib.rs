//! Image writers of pibake: partition tables, FAT, ext4 via mke2fs, tar, bmap, verify.
