//! `[cluster]`: the cluster's name, domain, time zone, kernel source and
//! admin account.

use super::{p, Validator};
use crate::diag::Diagnostic;
use crate::model::{KernelSource, Node, Platform};
use pibake_firstboot::hostname;
use std::collections::BTreeMap;

impl Validator<'_> {
    /// Checks `[cluster]` and returns its kernel source.
    pub(super) fn cluster_table(&mut self) -> KernelSource {
        self.names();
        let kernel = self.kernel();
        self.admin();
        kernel
    }

    fn names(&mut self) {
        let info = &self.raw.cluster;
        if !hostname::is_dns_label(&info.name) {
            self.error(
                p(&["cluster", "name"]),
                format!("`{}` is not a valid RFC 1123 label", info.name),
                format!(
                    "use letters, digits and hyphens, e.g. `{}`",
                    hostname::suggest(&info.name)
                ),
            );
        }
        if !hostname::is_dns_name(&info.domain) {
            self.error(
                p(&["cluster", "domain"]),
                format!("`{}` is not a valid DNS domain", info.domain),
                "use dot-separated RFC 1123 labels, e.g. `lab.internal`",
            );
        }
        if !valid_timezone(&info.timezone) {
            self.error(
                p(&["cluster", "timezone"]),
                format!("`{}` is not a tz database name", info.timezone),
                "use a name like `Europe/Berlin` or `UTC`",
            );
        }
    }

    fn kernel(&mut self) -> KernelSource {
        match self.raw.cluster.kernel.as_str() {
            "debian" => KernelSource::Debian,
            "raspberrypi" => KernelSource::Raspberrypi,
            other => {
                self.error(
                    p(&["cluster", "kernel"]),
                    format!("unknown kernel source `{other}`"),
                    "use `debian` or `raspberrypi`",
                );
                KernelSource::Debian
            }
        }
    }

    fn admin(&mut self) {
        let admin = &self.raw.cluster.admin;
        if !hostname::is_dns_label(&admin.user)
            || admin.user.starts_with(|c: char| c.is_ascii_digit())
        {
            self.error(
                p(&["cluster", "admin", "user"]),
                format!("`{}` is not a valid user name", admin.user),
                "use lower-case letters, digits and hyphens, starting with a letter",
            );
        }
        for (i, key) in admin.ssh_authorized_keys.iter().enumerate() {
            let field = p(&["cluster", "admin", "ssh_authorized_keys", &i.to_string()]);
            if key.contains("PRIVATE KEY") {
                self.error(
                    field,
                    "this is a private key; images must never carry secrets",
                    "put the public key (the .pub file's one line) here",
                );
            } else if !is_public_key(key) {
                self.error(
                    field,
                    "not an OpenSSH public key",
                    "use one line like `ssh-ed25519 AAAA... comment`",
                );
            }
        }
    }

    /// A note when Debian's kernel is to boot a Pi 5.
    pub(super) fn kernel_note(&mut self, nodes: &BTreeMap<String, Node>) {
        if self.raw.cluster.kernel == "debian"
            && nodes.values().any(|n| n.platform == Platform::Rpi5)
        {
            self.diagnostics.push(
                Diagnostic::note(self.file, p(&["cluster", "kernel"]), "Debian's kernel has no RP1 driver: a real Pi 5 boots without Ethernet and USB")
                    .help("for real Pi 5 boards set kernel = \"raspberrypi\" and add the Raspberry Pi archive as a profile source"),
            );
        }
    }
}

/// The form of a tz database name; [`crate::model::tz`] checks it against tzdata.
pub(in crate::model) fn valid_timezone(tz: &str) -> bool {
    !tz.is_empty()
        && !tz.starts_with('/')
        && !tz.contains("..")
        && tz
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_-+".contains(c))
}

fn is_public_key(key: &str) -> bool {
    let mut parts = key.split_whitespace();
    let (Some(kind), Some(body)) = (parts.next(), parts.next()) else {
        return false;
    };
    (kind.starts_with("ssh-") || kind.starts_with("ecdsa-sha2-") || kind.starts_with("sk-"))
        && body.starts_with("AAAA")
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c))
}
