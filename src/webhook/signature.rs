//! Checking that a delivery comes from the hosted repository: the HMAC-SHA256 of the body that
//! GitHub and Gitea send, or the token GitLab sends, compared in constant time.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::config::Provider;

type HmacSha256 = Hmac<Sha256>;

/// Why a delivery's signature is refused (all answered 401; the reason goes to the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The header the provider signs with is absent.
    Missing,
    /// The header is there but is not a signature (wrong prefix, not hex, wrong length).
    Malformed,
    /// The signature is well formed and wrong: another secret, or another body.
    Mismatch,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refused::Missing => "no signature header",
            Refused::Malformed => "a malformed signature header",
            Refused::Mismatch => "a signature that does not match the body and the secret",
        })
    }
}

/// Checks a delivery's signature: `header` looks up a request header by (lowercase) name.
pub fn verify<'a>(
    provider: Provider,
    secret: &[u8],
    body: &[u8],
    header: impl Fn(&str) -> Option<&'a [u8]>,
) -> Result<(), Refused> {
    match provider {
        Provider::Github => verify_hub(secret, body, header("x-hub-signature-256")),
        Provider::Gitea => match header("x-gitea-signature") {
            Some(plain) => verify_hmac(secret, body, plain),
            None => verify_hub(secret, body, header("x-hub-signature-256")),
        },
        Provider::Gitlab => verify_token(secret, header("x-gitlab-token")),
    }
}

/// Checks `X-Hub-Signature-256: sha256=<hex>`.
fn verify_hub(secret: &[u8], body: &[u8], value: Option<&[u8]>) -> Result<(), Refused> {
    let value = value.ok_or(Refused::Missing)?;
    let hex = value.strip_prefix(b"sha256=").ok_or(Refused::Malformed)?;
    verify_hmac(secret, body, hex)
}

/// Checks a hex HMAC-SHA256 of `body`; `verify_slice` compares in constant time.
fn verify_hmac(secret: &[u8], body: &[u8], hex: &[u8]) -> Result<(), Refused> {
    let expected = decode_hex(hex).ok_or(Refused::Malformed)?;
    if expected.len() != 32 {
        return Err(Refused::Malformed);
    }
    let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| Refused::Mismatch)?;
    mac.update(body);
    mac.verify_slice(&expected).map_err(|_| Refused::Mismatch)
}

/// Checks GitLab's `X-Gitlab-Token`, which is the secret itself. Both are put through an HMAC
/// under a fixed key and the results compared with `verify_slice`: a constant-time comparison
/// that does not even leak the secret's length, with no second crate for it.
fn verify_token(secret: &[u8], value: Option<&[u8]>) -> Result<(), Refused> {
    let token = value.ok_or(Refused::Missing)?;
    const KEY: &[u8] = b"pushdeploy gitlab token comparison";
    let digest = |bytes: &[u8]| {
        let mut mac = HmacSha256::new_from_slice(KEY).expect("HMAC takes a key of any length");
        mac.update(bytes);
        mac
    };
    let expected = digest(secret).finalize().into_bytes();
    digest(token).verify_slice(&expected).map_err(|_| Refused::Mismatch)
}

/// Returns the HMAC-SHA256 of `body` under `secret`, as `X-Hub-Signature-256` spells it.
#[cfg(test)]
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!("sha256={}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn decode_hex(hex: &[u8]) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 {
        return None;
    }
    hex.chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(text, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123";

    fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a [u8]> {
        move |name| pairs.iter().find(|(key, _)| *key == name).map(|(_, value)| value.as_bytes())
    }

    #[test]
    fn github_signature_of_the_body_is_accepted_and_nothing_else() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let good = sign(SECRET, body);
        let ok = verify(Provider::Github, SECRET, body, headers(&[("x-hub-signature-256", &good)]));
        assert_eq!(ok, Ok(()));
        let other_body = verify(
            Provider::Github,
            SECRET,
            br#"{"ref":"refs/heads/evil"}"#,
            headers(&[("x-hub-signature-256", &good)]),
        );
        assert_eq!(other_body, Err(Refused::Mismatch));
        assert_eq!(verify(Provider::Github, SECRET, body, headers(&[])), Err(Refused::Missing));
        let bare_hex = &good["sha256=".len()..];
        let no_prefix =
            verify(Provider::Github, SECRET, body, headers(&[("x-hub-signature-256", bare_hex)]));
        assert_eq!(no_prefix, Err(Refused::Malformed));
    }

    #[test]
    fn gitea_takes_its_own_header_or_githubs() {
        let body = b"{}";
        let good = sign(SECRET, body);
        let plain = verify(
            Provider::Gitea,
            SECRET,
            body,
            headers(&[("x-gitea-signature", &good["sha256=".len()..])]),
        );
        assert_eq!(plain, Ok(()));
        let hub = verify(Provider::Gitea, SECRET, body, headers(&[("x-hub-signature-256", &good)]));
        assert_eq!(hub, Ok(()));
    }

    #[test]
    fn gitlab_token_must_equal_the_secret() {
        let secret = std::str::from_utf8(SECRET).unwrap();
        let ok = verify(Provider::Gitlab, SECRET, b"", headers(&[("x-gitlab-token", secret)]));
        assert_eq!(ok, Ok(()));
        let prefix =
            verify(Provider::Gitlab, SECRET, b"", headers(&[("x-gitlab-token", &secret[..10])]));
        assert_eq!(prefix, Err(Refused::Mismatch));
        // A GitHub signature is not a GitLab token.
        let hub = sign(SECRET, b"");
        let wrong_kind =
            verify(Provider::Gitlab, SECRET, b"", headers(&[("x-hub-signature-256", &hub)]));
        assert_eq!(wrong_kind, Err(Refused::Missing));
    }
}
