//! Where a value stands in the file, and the checks every section shares
//! (integers in range, durations, interface names, VIPs): each error names
//! file, line and key.

use super::*;

pub(super) struct Context<'a> {
    pub(super) text: &'a str,
    pub(super) file: &'a Path,
}

impl Context<'_> {
    pub(super) fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    pub(super) fn error(
        &self,
        span: std::ops::Range<usize>,
        key: &str,
        message: &str,
    ) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: self.line_of(span.start),
            key: key.to_string(),
            message: message.to_string(),
        }
    }

    /// toml's own errors carry a span; the key is whatever stands before
    /// `=` on that line (or the bare key for unknown fields).
    pub(super) fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let span = e.span().unwrap_or(0..0);
        let line = self.line_of(span.start);
        let text = self
            .text
            .lines()
            .nth(line.saturating_sub(1))
            .unwrap_or_default();
        let key = text
            .split('=')
            .next()
            .unwrap_or_default()
            .trim()
            .trim_matches(['[', ']'])
            .to_string();
        ConfigError {
            file: self.file.to_path_buf(),
            line,
            key: if key.is_empty() {
                "(syntax)".to_string()
            } else {
                key
            },
            message: plain_type_error(e.message().trim()),
        }
    }

    pub(super) fn integer(
        &self,
        value: &Spanned<i64>,
        key: &str,
        min: i64,
        max: i64,
    ) -> Result<i64, ConfigError> {
        let n = *value.get_ref();
        if !(min..=max).contains(&n) {
            return Err(self.error(
                value.span(),
                key,
                &format!("{n} is out of range; allowed {min} to {max}"),
            ));
        }
        Ok(n)
    }

    pub(super) fn interface_name(
        &self,
        value: &Spanned<String>,
        key: &str,
    ) -> Result<String, ConfigError> {
        let name = value.get_ref();
        // The kernel's own rule (dev_valid_name): `:` was an alias's, and a
        // newline would forge lines in `status`.
        let bad = name.is_empty()
            || name.len() > 15
            || name == "."
            || name == ".."
            || name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
        if bad {
            return Err(self.error(
                value.span(),
                key,
                "must be an interface name (1 to 15 characters, not `.` or `..`, no `/`, `:`, spaces or control characters)",
            ));
        }
        Ok(name.clone())
    }

    /// A duration that must not be zero: `why` says what zero would do.
    pub(super) fn positive_duration_or(
        &self,
        value: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
        why: &str,
    ) -> Result<Duration, ConfigError> {
        let duration = self.duration_or(value, key, default)?;
        match value {
            Some(text) if duration.is_zero() => {
                Err(self.error(text.span(), key, &format!("must be more than 0: {why}")))
            }
            _ => Ok(duration),
        }
    }

    /// An optional duration key: `default` when absent.
    pub(super) fn duration_or(
        &self,
        value: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            Some(text) => self.duration(text, key),
            None => Ok(default),
        }
    }

    pub(super) fn duration(
        &self,
        value: &Spanned<String>,
        key: &str,
    ) -> Result<Duration, ConfigError> {
        humantime::parse_duration(value.get_ref()).map_err(|e| {
            self.error(
                value.span(),
                key,
                &format!(
                    "`{}` is not a duration ({e}); write it like \"10ms\" or \"1s\"",
                    value.get_ref()
                ),
            )
        })
    }

    pub(super) fn virtual_ip(&self, entry: &Spanned<String>) -> Result<VirtualIp, ConfigError> {
        let text = entry.get_ref();
        let bad = |what: &str| {
            self.error(
                entry.span(),
                "virtual_ips",
                &format!("`{text}`: {what}; write it like \"10.10.10.3/24\""),
            )
        };
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text.as_str(), None),
        };
        let address: IpAddr = address.parse().map_err(|_| bad("not an IP address"))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| bad("bad prefix length"))?,
        };
        // An address no host can be reached at, or a route for everything,
        // would be "held" while nothing answers at it.
        if let Some(why) = unusable_address(address) {
            return Err(bad(why));
        }
        if prefix_len == 0 {
            return Err(bad("prefix /0 would route every address to this interface"));
        }
        Ok(VirtualIp {
            address,
            prefix_len,
        })
    }
}

/// Why `address` cannot be a VIP or a peer: no single host answers at it.
/// (IPv6 link-local stays allowed: RFC 5798 §5.2.9 wants one as the first
/// IPv6 VIP.)
pub(super) fn unusable_address(address: IpAddr) -> Option<&'static str> {
    if address.is_unspecified() {
        Some("the unspecified address is no host's")
    } else if address.is_loopback() {
        Some("a loopback address never leaves this server")
    } else if address.is_multicast() {
        Some("a multicast address is a group, not a host")
    } else if address == IpAddr::V4(std::net::Ipv4Addr::BROADCAST) {
        Some("the broadcast address is every host's")
    } else {
        None
    }
}

/// serde's "expected i64" in the words an operator uses.
fn plain_type_error(message: &str) -> String {
    let mut message = message.to_string();
    for (rust, plain) in [
        ("expected i64", "expected a whole number (no quotes), e.g. 67"),
        ("expected u64", "expected a whole number (no quotes), e.g. 67"),
        ("expected u32", "expected a whole number (no quotes), e.g. 67"),
        ("expected u16", "expected a whole number (no quotes), e.g. 67"),
        ("expected u8", "expected a whole number (no quotes), e.g. 67"),
        ("expected a boolean", "expected true or false (no quotes)"),
        ("expected a sequence", "expected a list in brackets, e.g. [\"a\", \"b\"]"),
        ("expected a string", "expected a string in quotes"),
    ] {
        message = message.replace(rust, plain);
    }
    message
}
