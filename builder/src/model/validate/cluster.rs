//! `[cluster]`: the cluster's name, domain, time zone and admin account.

use super::{p, Validator};
use pibake_firstboot::hostname;

impl Validator<'_> {
    /// Checks `[cluster]`.
    pub(super) fn cluster_table(&mut self) {
        self.names();
        self.admin();
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
