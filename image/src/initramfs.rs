//! Reading an initramfs as the kernel does: newc cpio archives, one after
//! another, each uncompressed, gzip or zstd compressed (initramfs-tools
//! prepends an uncompressed early archive to the compressed main one).
//! `pibake verify` lists it to check a Pi 5 image's early modules.

use std::collections::BTreeMap;
use std::io::Read;

/// The files of an initramfs: path → contents (directories and links have
/// empty contents).
pub type Files = BTreeMap<String, Vec<u8>>;

const NEWC: &[u8] = b"070701";
const NEWC_CRC: &[u8] = b"070702";
const HEADER: usize = 110;

fn hex_field(h: &[u8], at: usize) -> Result<usize, String> {
    let text = std::str::from_utf8(&h[at..at + 8]).map_err(|_| "bad cpio header".to_string())?;
    usize::from_str_radix(text, 16).map_err(|_| format!("bad cpio header field {text:?}"))
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Reads one uncompressed cpio archive from the start of `data` into
/// `files`; returns the bytes consumed (through the trailer and its padding).
fn read_cpio(data: &[u8], files: &mut Files) -> Result<usize, String> {
    let mut at = 0;
    loop {
        let h = data.get(at..at + HEADER).ok_or("cpio archive cut short")?;
        if &h[..6] != NEWC && &h[..6] != NEWC_CRC {
            return Err(format!("no newc cpio header at byte {at}"));
        }
        let size = hex_field(h, 54)?;
        let name_size = hex_field(h, 94)?;
        let name_end = at + HEADER + name_size;
        let name = data
            .get(at + HEADER..name_end.saturating_sub(1))
            .ok_or("cpio name cut short")?;
        let name = String::from_utf8_lossy(name).into_owned();
        let body = align4(name_end);
        let contents = data.get(body..body + size).ok_or("cpio file cut short")?;
        at = align4(body + size);
        if name == "TRAILER!!!" {
            return Ok(at);
        }
        let name = name.trim_start_matches("./").to_owned();
        files.insert(name, contents.to_vec());
    }
}

/// Every file of the initramfs `data`.
pub fn files(data: &[u8]) -> Result<Files, String> {
    let mut files = Files::new();
    read_archives(data, true, &mut files)?;
    Ok(files)
}

/// Reads the archives of `data` one after another (zero padding between
/// them); a compressed one, allowed only when `compressed_ok`, runs to the
/// end of the data and holds only uncompressed archives itself.
fn read_archives(data: &[u8], compressed_ok: bool, files: &mut Files) -> Result<(), String> {
    let mut rest = data;
    loop {
        let skip = rest.iter().take_while(|b| **b == 0).count();
        rest = &rest[skip..];
        if rest.is_empty() {
            return Ok(());
        }
        if rest.starts_with(NEWC) || rest.starts_with(NEWC_CRC) {
            let used = read_cpio(rest, files)?;
            rest = &rest[used..];
            continue;
        }
        if !compressed_ok {
            return Err(format!("no newc cpio header ({} bytes left)", rest.len()));
        }
        let mut inflated = Vec::new();
        if rest.starts_with(&[0x1f, 0x8b]) {
            flate2::read::MultiGzDecoder::new(rest)
                .read_to_end(&mut inflated)
                .map_err(|e| format!("gzip: {e}"))?;
        } else if rest.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            zstd::stream::read::Decoder::new(rest)
                .and_then(|mut d| d.read_to_end(&mut inflated))
                .map_err(|e| format!("zstd: {e}"))?;
        } else {
            return Err("neither a cpio archive nor gzip/zstd compressed data".into());
        }
        return read_archives(&inflated, false, files);
    }
}

/// The loadable modules among `files` (`…/clk-rp1.ko.xz` → `clk_rp1`), and
/// the built-in ones its `modules.builtin` lists.
pub fn modules(files: &Files) -> (Vec<String>, Vec<String>) {
    let key = |path: &str| {
        let name = path.rsplit('/').next()?;
        let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
            .iter()
            .find_map(|ext| name.strip_suffix(ext))?;
        Some(crate::pi5::module_key(stem))
    };
    let loadable = files.keys().filter_map(|p| key(p)).collect();
    let builtin = files
        .iter()
        .filter(|(p, _)| p.ends_with("/modules.builtin"))
        .flat_map(|(_, text)| {
            String::from_utf8_lossy(text)
                .lines()
                .filter_map(key)
                .collect::<Vec<_>>()
        })
        .collect();
    (loadable, builtin)
}

/// A newc archive of `entries` (path, contents: regular files) with its
/// trailer: what tests plant as an initramfs.
pub fn newc(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let all = entries.iter().copied().chain([("TRAILER!!!", &b""[..])]);
    for (i, (name, body)) in all.enumerate() {
        let header =
            format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            i, 0o100644, 0, 0, 1, 0, body.len(), 0, 0, 0, 0, name.len() + 1, 0
        );
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(body);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn early_archive_then_compressed_main_one() {
        let early = newc(&[("kernel/x86/microcode/GenuineIntel.bin", b"ucode")]);
        let main = newc(&[
            ("conf/modules", b"rp1_pci\n"),
            (
                "usr/lib/modules/7.3/kernel/drivers/misc/rp1/rp1_pci.ko.xz",
                b"",
            ),
            (
                "usr/lib/modules/7.3/modules.builtin",
                b"kernel/drivers/pci/controller/pcie-brcmstb.ko\n",
            ),
        ]);
        for compressed in [gzip(&main), zstd::encode_all(&main[..], 3).unwrap()] {
            let mut image = early.clone();
            image.extend_from_slice(&[0; 512]);
            image.extend_from_slice(&compressed);
            let files = files(&image).unwrap();
            assert_eq!(files["conf/modules"], b"rp1_pci\n");
            assert!(files.contains_key("kernel/x86/microcode/GenuineIntel.bin"));
            let (loadable, builtin) = modules(&files);
            assert_eq!(loadable, ["rp1_pci"]);
            assert_eq!(builtin, ["pcie_brcmstb"]);
        }
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(files(b"not an initramfs").is_err());
        let mut cut = newc(&[("a", b"12345678")]);
        cut.truncate(120);
        assert!(files(&cut).is_err());
    }
}
