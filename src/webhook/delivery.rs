//! What a signed delivery asks for: its event, and for a push, the ref and the commit it moved
//! to. Every field is validated here, before anything acts on it.

use serde::Deserialize;

use crate::config::Provider;
use crate::git;

/// What a signed delivery is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A push: the branch (short name) and the commit it moved to (`None`: deleted).
    Push { branch: String, after: Option<String> },
    /// A push of a tag, or of anything that is not a branch.
    NotABranch { name: String },
    /// GitHub's and Gitea's test delivery when a webhook is created.
    Ping,
    /// Any other event (issues, releases, …), named as the provider names it.
    Other(String),
}

/// Why a signed delivery is refused (answered 400, or 422 for a ref pushdeploy will not take).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// Not the JSON of a push event, or no event header: 400.
    Malformed(String),
    /// A branch name pushdeploy does not deploy from a webhook: 422.
    Ref(String),
}

/// The fields of a push payload pushdeploy reads; GitHub, Gitea and GitLab all send them.
#[derive(Deserialize)]
struct PushPayload {
    #[serde(rename = "ref")]
    ref_name: String,
    after: String,
}

/// Reads the event of a delivery whose signature was verified.
pub fn parse<'a>(
    provider: Provider,
    body: &[u8],
    header: impl Fn(&str) -> Option<&'a [u8]>,
) -> Result<Event, Invalid> {
    let event_header = match provider {
        Provider::Github => "x-github-event",
        Provider::Gitea => "x-gitea-event",
        Provider::Gitlab => "x-gitlab-event",
    };
    let event = header(event_header)
        .or_else(|| header("x-github-event"))
        .map(|value| String::from_utf8_lossy(value).into_owned())
        .ok_or_else(|| Invalid::Malformed(format!("no {event_header} header")))?;
    match event.as_str() {
        "push" | "Push Hook" => {}
        "ping" => return Ok(Event::Ping),
        _ => return Ok(Event::Other(event)),
    }
    if body.starts_with(b"payload=") {
        return Err(Invalid::Malformed(
            "a form-encoded body: set the webhook's content type to application/json".into(),
        ));
    }
    let payload: PushPayload = serde_json::from_slice(body)
        .map_err(|err| Invalid::Malformed(format!("not a push event's JSON: {err}")))?;
    let after = match payload.after.bytes().all(|b| b == b'0') {
        true => None,
        false => Some(payload.after),
    };
    if let Some(after) = &after
        && !is_object_id(after)
    {
        return Err(Invalid::Malformed(format!("`after` is not a commit id: {after:?}")));
    }
    let Some(branch) = payload.ref_name.strip_prefix("refs/heads/") else {
        return Ok(Event::NotABranch { name: payload.ref_name });
    };
    if !is_plain_branch_name(branch) {
        return Err(Invalid::Ref(payload.ref_name));
    }
    Ok(Event::Push { branch: branch.to_owned(), after })
}

/// Tells whether `text` is a full SHA-1 or SHA-256 object id in lowercase hex.
fn is_object_id(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Tells whether a branch from a delivery may be acted on: a valid git branch name made only
/// of letters, digits and `._-/`. git allows `$`, `;`, quotes and spaces in a branch name;
/// pushdeploy never passes a ref through a shell, but a name with them is refused all the same,
/// so none reaches a command line, a log line or a directory name.
pub fn is_plain_branch_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
        && git::is_valid_branch_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn github<'a>(event: &'a str) -> impl Fn(&str) -> Option<&'a [u8]> {
        move |name| (name == "x-github-event").then_some(event.as_bytes())
    }

    #[test]
    fn reads_a_push_and_refuses_shell_characters_in_its_ref() {
        let id = "a".repeat(40);
        let body = format!(r#"{{"ref":"refs/heads/main","after":"{id}","before":"x"}}"#);
        let event = parse(Provider::Github, body.as_bytes(), github("push")).unwrap();
        assert_eq!(event, Event::Push { branch: "main".into(), after: Some(id.clone()) });
        let hostile = format!(r#"{{"ref":"refs/heads/x$(touch${{IFS}}p)","after":"{id}"}}"#);
        let refused = parse(Provider::Github, hostile.as_bytes(), github("push"));
        assert!(matches!(refused, Err(Invalid::Ref(_))), "{refused:?}");
        let deleted = format!(r#"{{"ref":"refs/heads/f/x","after":"{}"}}"#, "0".repeat(40));
        let event = parse(Provider::Github, deleted.as_bytes(), github("push")).unwrap();
        assert_eq!(event, Event::Push { branch: "f/x".into(), after: None });
    }

    #[test]
    fn names_pings_tags_and_other_events() {
        let tag = format!(r#"{{"ref":"refs/tags/v1","after":"{}"}}"#, "b".repeat(40));
        assert_eq!(parse(Provider::Github, b"{}", github("ping")), Ok(Event::Ping));
        assert_eq!(
            parse(Provider::Github, tag.as_bytes(), github("push")),
            Ok(Event::NotABranch { name: "refs/tags/v1".into() })
        );
        assert_eq!(
            parse(Provider::Github, b"{}", github("issues")),
            Ok(Event::Other("issues".into()))
        );
        let bad_id = r#"{"ref":"refs/heads/main","after":"HEAD~1"}"#;
        assert!(matches!(
            parse(Provider::Github, bad_id.as_bytes(), github("push")),
            Err(Invalid::Malformed(_))
        ));
        assert!(!is_plain_branch_name("a..b") && !is_plain_branch_name("-x;y"));
    }
}
