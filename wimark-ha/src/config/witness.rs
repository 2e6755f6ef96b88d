//! `[witness]`: the etcd endpoints, the key the master-stack node holds and
//! its lease, checked here so that the daemon never starts with a witness
//! it could not use.

use super::*;

/// etcd counts lease TTLs in seconds; a witness slower than this would
/// hold a promotion back longer than any operator waits.
const MAX_LEASE_TTL: Duration = Duration::from_secs(60);

impl Context<'_> {
    pub(super) fn witness(
        &self,
        raw: Option<Spanned<RawWitness>>,
        roles: &Option<RolesConfig>,
    ) -> Result<Option<WitnessConfig>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        let span = raw.span();
        let raw = raw.into_inner();
        if roles.is_none() {
            return Err(self.error(
                span,
                "witness",
                "the witness decides where the master stack runs: it needs a [roles] section",
            ));
        }
        if raw.endpoints.get_ref().is_empty() {
            return Err(self.error(
                raw.endpoints.span(),
                "witness.endpoints",
                "name at least one etcd member, e.g. [\"http://10.0.0.9:2379\"]",
            ));
        }
        let mut endpoints = Vec::new();
        let mut secure = Vec::new();
        for endpoint in raw.endpoints.get_ref() {
            let text = endpoint.get_ref();
            let (scheme, rest) = text.split_once("://").unwrap_or(("", text));
            let port = rest.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
            let host = rest.rsplit_once(':').map_or("", |(h, _)| h);
            if !matches!(scheme, "http" | "https")
                || host.is_empty()
                || rest.contains('/')
                || !matches!(port, Some(Ok(p)) if p > 0)
            {
                return Err(self.error(
                    endpoint.span(),
                    "witness.endpoints",
                    &format!("`{text}` is not an etcd client URL: write it like \"http://10.0.0.9:2379\" (or https://)"),
                ));
            }
            secure.push(scheme == "https");
            endpoints.push(text.clone());
        }
        let key = raw.key.get_ref();
        if !key.starts_with('/') || key.len() < 2 || key.chars().any(char::is_whitespace) {
            return Err(self.error(
                raw.key.span(),
                "witness.key",
                "must be an absolute etcd key without spaces, one per instance or sync group, e.g. \"/wimark-ha/WIM1\"",
            ));
        }
        let lease_ttl = self.positive_duration_or(
            &raw.lease_ttl,
            "witness.lease_ttl",
            Duration::from_secs(2),
            "a lease of 0 s expires as it is granted",
        )?;
        if let Some(text) = &raw.lease_ttl {
            if lease_ttl.subsec_nanos() != 0 || lease_ttl > MAX_LEASE_TTL {
                return Err(self.error(
                    text.span(),
                    "witness.lease_ttl",
                    "must be whole seconds, 1s to 60s (etcd counts leases in seconds; a lost master's key is free after it)",
                ));
            }
        }
        let node = match &raw.node {
            Some(node) => {
                let name = node.get_ref();
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
                {
                    return Err(self.error(
                        node.span(),
                        "witness.node",
                        "must be a plain name (letters, digits, '.', '-', '_'): it tells the pair's two nodes apart in the key",
                    ));
                }
                name.clone()
            }
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .ok()
                .filter(|h| !h.is_empty())
                .ok_or_else(|| {
                    self.error(
                        span.clone(),
                        "witness.node",
                        "the hostname cannot be read: set `node` to this server's name",
                    )
                })?,
        };
        let credentials = match (&raw.user, &raw.password) {
            (None, None) => None,
            (Some(user), Some(password)) if !user.get_ref().is_empty() => {
                Some(WitnessCredentials {
                    user: user.get_ref().clone(),
                    password: password.get_ref().clone(),
                })
            }
            (Some(user), _) => {
                return Err(self.error(
                    user.span(),
                    "witness.password",
                    "set both `user` and `password` (etcd's authentication), or neither",
                ))
            }
            (None, Some(password)) => {
                return Err(self.error(
                    password.span(),
                    "witness.user",
                    "set both `user` and `password` (etcd's authentication), or neither",
                ))
            }
        };
        let tls = match &raw.tls {
            None => None,
            Some(tls) => {
                let tls = tls.get_ref();
                let absolute = |value: &Spanned<String>, key: &str| {
                    let path = PathBuf::from(value.get_ref());
                    if path.is_absolute() {
                        Ok(path)
                    } else {
                        Err(self.error(value.span(), key, "must be an absolute path"))
                    }
                };
                let ca = absolute(&tls.ca, "witness.tls.ca")?;
                let identity = match (&tls.cert, &tls.key) {
                    (None, None) => None,
                    (Some(cert), Some(key)) => Some((
                        absolute(cert, "witness.tls.cert")?,
                        absolute(key, "witness.tls.key")?,
                    )),
                    (Some(value), None) | (None, Some(value)) => {
                        return Err(self.error(
                            value.span(),
                            "witness.tls",
                            "a client certificate needs both `cert` and `key`",
                        ))
                    }
                };
                Some(WitnessTls { ca, identity })
            }
        };
        if let Some(position) = secure.iter().position(|&s| s != tls.is_some()) {
            let endpoint = &raw.endpoints.get_ref()[position];
            return Err(self.error(
                endpoint.span(),
                "witness.endpoints",
                if tls.is_some() {
                    "with `tls` every endpoint must be https://"
                } else {
                    "an https:// endpoint needs `tls = { ca = \"...\" }`"
                },
            ));
        }
        let on_isolation = match raw
            .on_isolation
            .as_ref()
            .map(|v| (v.get_ref().as_str(), v.span()))
        {
            None | Some(("keep_vip", _)) => OnIsolation::KeepVip,
            Some(("release_vip", _)) => OnIsolation::ReleaseVip,
            Some((other, span)) => {
                return Err(self.error(
                    span,
                    "witness.on_isolation",
                    &format!("`{other}` is not one of \"keep_vip\", \"release_vip\""),
                ))
            }
        };
        Ok(Some(WitnessConfig {
            endpoints,
            key: key.clone(),
            lease_ttl,
            node,
            credentials,
            tls,
            on_isolation,
        }))
    }
}
