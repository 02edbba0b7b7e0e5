//! One error type for every forge call. Messages say what happened and what to do; none ever
//! holds a token (only statuses, the forge's own message, cut short, and names).

pub type Result<T, E = ForgeError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    #[error("{forge} is not configured for {what}: set {hint}")]
    NotConfigured {
        forge: &'static str,
        what: &'static str,
        hint: &'static str,
    },
    #[error("`{0}` is not a repository name; use owner/name")]
    BadRepo(String),
    #[error("{forge} refused the credential for {what} (401); sign in with {forge} again")]
    Unauthorized { forge: &'static str, what: String },
    #[error("{forge} rate limit reached for {what}; retry in {retry_in}")]
    RateLimited {
        forge: &'static str,
        what: String,
        /// When the limit resets (ms since the epoch), when the forge said.
        reset_at_ms: Option<i64>,
        retry_in: String,
    },
    #[error("{forge} denied {what} (403): {message}")]
    Forbidden {
        forge: &'static str,
        what: String,
        message: String,
    },
    #[error("{forge} found no {what} (404); check the name and that the app is installed on it")]
    NotFound { forge: &'static str, what: String },
    #[error("{forge} refused {what} (422): {message}")]
    Invalid {
        forge: &'static str,
        what: String,
        message: String,
    },
    #[error("{forge} sign-in failed: {message}")]
    SignIn {
        forge: &'static str,
        /// The forge's error code (`bad_verification_code`, `bad_refresh_token`, …).
        code: String,
        message: String,
    },
    #[error("could not reach {forge} for {what}: {message}")]
    Unreachable {
        forge: &'static str,
        what: String,
        message: String,
    },
    #[error("{forge} answered {what} unexpectedly: {message}")]
    Protocol {
        forge: &'static str,
        what: String,
        message: String,
    },
    #[error("the {forge} app key is unusable: {0}", forge = "GitHub")]
    AppKey(String),
}
