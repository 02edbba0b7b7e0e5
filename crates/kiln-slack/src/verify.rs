//! Slack's request signing: `X-Slack-Signature` is `v0=` + hex HMAC-SHA256 of
//! `v0:{X-Slack-Request-Timestamp}:{raw body}` under the app's signing secret. Checked in
//! constant time (`Mac::verify_slice`) before the body is read; a timestamp more than five
//! minutes from now is refused, so a captured request cannot be replayed later.

use crate::SlackError;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a request's timestamp may be from now, either way, in seconds.
pub(crate) const MAX_SKEW_SECS: i64 = 5 * 60;

/// Checks a request's signature headers against `body`, at `now_secs` (Unix seconds).
pub(crate) fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_secs: i64,
) -> Result<(), SlackError> {
    let refuse = |m: &str| Err(SlackError::Unauthenticated(m.to_string()));
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return refuse(
            "the request has no X-Slack-Signature or X-Slack-Request-Timestamp header: \
             only Slack, signing with the app's signing secret, may send events here",
        );
    };
    let Ok(at) = timestamp.trim().parse::<i64>() else {
        return refuse("X-Slack-Request-Timestamp is not a number of seconds");
    };
    if (now_secs - at).abs() > MAX_SKEW_SECS {
        return refuse(
            "the request's timestamp is more than five minutes from this server's clock: \
             a replayed request, or a clock to fix",
        );
    }
    let Some(expected) = signature.trim().strip_prefix("v0=").and_then(decode_hex) else {
        return refuse("X-Slack-Signature is not `v0=` and a hex digest");
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(format!("v0:{at}:").as_bytes());
    mac.update(body);
    mac.verify_slice(&expected).or_else(|_| {
        refuse(
            "the X-Slack-Signature does not match: check that [slack] signing_secret is the \
             app's signing secret",
        )
    })
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_testkit::slack_events::sign_slack;

    const NOW: i64 = 1_700_000_000;

    fn check(secret: &str, ts: Option<&str>, sig: Option<&str>, body: &[u8]) -> bool {
        verify(secret.as_bytes(), ts, sig, body, NOW).is_ok()
    }

    #[test]
    fn good_bad_stale_and_missing_signatures() {
        let body = br#"{"type":"event_callback"}"#;
        let good = sign_slack("s3cret", NOW, body);
        let ts = NOW.to_string();
        assert!(check("s3cret", Some(&ts), Some(&good), body));
        // Another secret, another body, another timestamp than the one signed.
        assert!(!check("other", Some(&ts), Some(&good), body));
        assert!(!check("s3cret", Some(&ts), Some(&good), b"{}"));
        assert!(!check(
            "s3cret",
            Some(&(NOW + 1).to_string()),
            Some(&good),
            body
        ));
        // Signed correctly, but six minutes old or ahead.
        for at in [NOW - 360, NOW + 360] {
            let sig = sign_slack("s3cret", at, body);
            assert!(!check("s3cret", Some(&at.to_string()), Some(&sig), body));
        }
        let recent = sign_slack("s3cret", NOW - 240, body);
        assert!(check(
            "s3cret",
            Some(&(NOW - 240).to_string()),
            Some(&recent),
            body
        ));
        assert!(!check("s3cret", None, Some(&good), body));
        assert!(!check("s3cret", Some(&ts), None, body));
        assert!(!check("s3cret", Some(&ts), Some("v0=zz"), body));
        assert!(!check(
            "s3cret",
            Some(&ts),
            Some(good.trim_start_matches("v0=")),
            body
        ));
    }
}
