//! `[kernel]`: where the kernel of the Raspberry Pi images comes from.
//! Whether the locked package can boot each platform is checked against the
//! package itself ([`crate::kernel`]), once it is locked and fetched.

use super::{p, Validator};
use crate::model::{Kernel, KernelSource};

impl Validator<'_> {
    pub(super) fn kernel_table(&mut self) -> Kernel {
        let raw = &self.raw.kernel;
        let source = match raw.source.as_str() {
            "debian" => KernelSource::Debian,
            "raspberrypi" => KernelSource::Raspberrypi,
            "none" => KernelSource::None,
            other => {
                self.error(
                    p(&["kernel", "source"]),
                    format!("unknown kernel source `{other}`"),
                    "use `debian`, `raspberrypi` or `none` (the profiles bring the kernel)",
                );
                KernelSource::Debian
            }
        };
        if !pibake_inputs::resolve::valid_package_name(&raw.package) {
            self.error(
                p(&["kernel", "package"]),
                format!("`{}` is not a Debian package name", raw.package),
                "use a name like `linux-image-arm64`",
            );
        }
        let suite = raw
            .suite
            .clone()
            .unwrap_or_else(|| self.raw.cluster.suite.clone());
        if !pibake_inputs::resolve::valid_package_name(&suite) {
            self.error(
                p(&["kernel", "suite"]),
                format!("`{suite}` is not a suite name"),
                "use the host mirror's suite name, e.g. `trixie-backports`",
            );
        }
        Kernel {
            source,
            package: (source != KernelSource::None).then(|| raw.package.clone()),
            suite,
        }
    }
}
