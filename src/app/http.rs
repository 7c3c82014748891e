//! The HTTP GETs of an app deploy: the health gate on an instance's own port and the check
//! through the proxy. One blocking request at a time with short timeouts (`ureq`, without
//! TLS: both URLs are on this machine).

use std::time::Duration;

/// What a GET got: a status code, or why there was none.
pub type Answer = Result<u16, String>;

/// GETs `url` within `timeout`, following no redirect (a redirect is an answer, not a 2xx).
pub fn get(url: &str, timeout: Duration) -> Answer {
    get_with_slot(url, timeout).map(|(status, _)| status)
}

/// GETs `url` within `timeout` like [`get`]; also returns the `X-Pushdeploy-Slot` header, by
/// which the proxy configurations pushdeploy ships name the instance that answered.
pub fn get_with_slot(url: &str, timeout: Duration) -> Result<(u16, Option<String>), String> {
    get_with_header(url, timeout, "x-pushdeploy-slot")
}

/// GETs `url` within `timeout` like [`get`]; also returns the response header `header`.
pub fn get_with_header(
    url: &str,
    timeout: Duration,
    header: &str,
) -> Result<(u16, Option<String>), String> {
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .build();
    let agent: ureq::Agent = config.into();
    match agent.get(url).call() {
        Ok(response) => {
            let slot = response.headers().get(header);
            let slot = slot.and_then(|value| value.to_str().ok()).map(str::to_owned);
            Ok((response.status().as_u16(), slot))
        }
        Err(err) => Err(crate::report::escape(&err.to_string())),
    }
}

/// GETs `url` within `timeout` and parses its 2xx body as JSON; an error is one line.
pub fn get_json(url: &str, timeout: Duration) -> Result<serde_json::Value, String> {
    let config = ureq::Agent::config_builder().timeout_global(Some(timeout)).build();
    let agent: ureq::Agent = config.into();
    let shown = crate::report::escape(url);
    let mut response = agent
        .get(url)
        .call()
        .map_err(|err| format!("GET {shown}: {}", crate::report::escape(&err.to_string())))?;
    response.body_mut().read_json().map_err(|err| {
        format!("GET {shown}: no JSON answer ({})", crate::report::escape(&err.to_string()))
    })
}

/// Tells whether a status code is a success (2xx).
pub fn is_success(answer: &Answer) -> bool {
    matches!(answer, Ok(status) if (200..300).contains(status))
}

/// Describes an answer for a failure line: `500` or `connection refused`.
pub fn describe(answer: &Answer) -> String {
    match answer {
        Ok(status) => format!("HTTP {status}"),
        Err(err) => err.clone(),
    }
}
