//! One OCI repository used as a cache: its address, the client and the runtime that drives
//! it. pibake is synchronous; the client is async, so the cache owns a small runtime and
//! every call blocks on it (several entries still move at once within one call).

use crate::CacheError;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use std::fmt;

/// Entries moved at once by one push or pull.
pub const PARALLEL: usize = 4;

/// A cache: `http://HOST[:PORT]/REPOSITORY` (plain HTTP, a registry on the build's own
/// network) or `https://…` / `oci://…` (TLS).
pub struct Cache {
    url: String,
    registry: String,
    repository: String,
    pub(crate) client: Client,
    pub(crate) auth: RegistryAuth,
    pub(crate) runtime: tokio::runtime::Runtime,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cache({})", self.url)
    }
}

/// Credentials for the registry: a user and a token (GitHub's registry takes the workflow's
/// `GITHUB_TOKEN` with the actor's name), or none.
#[derive(Clone, Default)]
pub struct Credentials(pub Option<(String, String)>);

impl fmt::Debug for Credentials {
    // Never the token: it would end in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some((user, _)) => write!(f, "Credentials({user}, …)"),
            None => write!(f, "Credentials(anonymous)"),
        }
    }
}

impl Cache {
    /// Parses `url`; `what` names where it came from (a flag) in errors.
    pub fn open(url: &str, credentials: Credentials) -> Result<Self, CacheError> {
        let bad = |why: &str| CacheError::Address {
            url: url.to_owned(),
            why: why.to_owned(),
        };
        let (protocol, rest) = if let Some(rest) = url.strip_prefix("http://") {
            (ClientProtocol::Http, rest)
        } else if let Some(rest) = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("oci://"))
        {
            (ClientProtocol::Https, rest)
        } else {
            return Err(bad("want http://, https:// or oci:// before the registry"));
        };
        let (registry, repository) = rest
            .trim_end_matches('/')
            .split_once('/')
            .ok_or_else(|| bad("want a repository after the registry: HOST[:PORT]/NAME"))?;
        let repo_ok = !repository.is_empty()
            && repository.split('/').all(|part| {
                !part.is_empty()
                    && part.bytes().all(|b| {
                        b.is_ascii_lowercase()
                            || b.is_ascii_digit()
                            || matches!(b, b'.' | b'_' | b'-')
                    })
            });
        if registry.is_empty() || !repo_ok {
            return Err(bad(
                "the repository must be lower-case letters, digits, `.`, `_`, `-` and `/`",
            ));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(CacheError::Runtime)?;
        let client = Client::new(ClientConfig {
            protocol,
            max_concurrent_upload: PARALLEL,
            max_concurrent_download: PARALLEL,
            ..ClientConfig::default()
        });
        let auth = match credentials.0 {
            Some((user, token)) => RegistryAuth::Basic(user, token),
            None => RegistryAuth::Anonymous,
        };
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            client,
            auth,
            runtime,
        })
    }

    /// The address as given (no credentials: they are never part of it).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn tagged(&self, tag: &str) -> Reference {
        Reference::with_tag(
            self.registry.clone(),
            self.repository.clone(),
            tag.to_owned(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_parsed_or_refused_naming_the_rule() {
        let c = Cache::open(
            "http://127.0.0.1:5000/pibake/cache/",
            Credentials::default(),
        )
        .expect("http");
        assert_eq!(c.url(), "http://127.0.0.1:5000/pibake/cache");
        assert_eq!(
            c.tagged("entry-ab").whole(),
            "127.0.0.1:5000/pibake/cache:entry-ab"
        );
        assert!(Cache::open("oci://ghcr.io/owner/lab-cache", Credentials::default()).is_ok());
        for bad in [
            "ghcr.io/owner/x",
            "ftp://host/x",
            "http://host",
            "http://host/",
            "http://host/Upper",
            "http://host/a//b",
        ] {
            let err = Cache::open(bad, Credentials::default()).expect_err(bad);
            assert!(err.to_string().contains(bad), "{err}");
        }
    }
}
