//! Route handlers, one module per resource, and the OpenAPI document built from them.

pub(crate) mod access;
pub(crate) mod audit;
pub(crate) mod github;
pub(crate) mod manage;
pub(crate) mod mcp;
pub(crate) mod metrics;
pub(crate) mod plan;
pub(crate) mod prompts;
pub(crate) mod push;
pub(crate) mod repos;
pub(crate) mod secrets;
pub(crate) mod sessions;
pub(crate) mod slack;
pub(crate) mod stats;
pub(crate) mod status;
pub(crate) mod tree;
pub(crate) mod users;
pub(crate) mod webhook;
pub(crate) mod ws;

use utoipa::OpenApi;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, ResponseBuilder, content::ContentBuilder};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "kiln",
        description = "Hosted background coding agents: the control-plane API. \
        Authenticate with `Authorization: Bearer <token>` (or, in a browser, the `kiln_token` \
        cookie; WebSocket upgrades also take `?token=`). Every error is `{\"error\": \"...\"}`."
    ),
    modifiers(&Conventions),
    security(("bearer" = []), ("cookie" = [])),
    paths(
        status::health,
        status::status,
        crate::openapi,
        metrics::metrics,
        users::me,
        github::start,
        github::unlink,
        github::open_pr,
        webhook::webhook,
        slack::events,
        slack::link,
        slack::get_link,
        slack::unlink,
        users::create_user,
        users::list_users,
        users::create_token,
        users::list_tokens,
        users::revoke_token,
        users::update_user,
        users::deactivate_user,
        crate::login::sign_in_methods,
        crate::login::create_login_link,
        crate::login::logout,
        repos::create_repo,
        repos::list_repos,
        repos::get_repo,
        repos::update_repo,
        repos::warm,
        repos::pool,
        repos::collect_garbage,
        audit::audit,
        access::get_access,
        access::set_access,
        secrets::list_secrets,
        secrets::set_secret,
        secrets::delete_secret,
        mcp::list_mcp,
        repos::build_image,
        repos::list_images,
        repos::get_image,
        repos::image_log,
        sessions::create_session,
        sessions::list_sessions,
        sessions::get_session,
        sessions::update_session,
        sessions::send_prompt,
        prompts::retry_prompt,
        plan::decide_plan,
        sessions::stop_session,
        push::push_session,
        push::session_diff,
        push::session_patch,
        sessions::create_share,
        sessions::join,
        sessions::events,
        sessions::start_stats,
        stats::stats,
        tree::session_tree,
        manage::archive_session,
        manage::delete_session,
        manage::list_shares,
        manage::revoke_share,
        manage::set_role,
        manage::remove_participant,
        manage::delete_repo,
        ws::ws,
        ws::user_ws,
    ),
    components(schemas(
        kiln_protocol::api::EventEnvelope,
        kiln_protocol::api::ServerFrame,
        kiln_protocol::api::ClientFrame,
        kiln_protocol::api::Ephemeral,
        kiln_protocol::api::UserClientFrame,
        kiln_protocol::api::UserServerFrame,
    ))
)]
pub(crate) struct ApiDoc;

/// What holds for every operation, stated once instead of on thirty handlers: the security
/// schemes, and the error responses that the server's shared parts give. Every secured route
/// answers 401 without a valid token and 403 to a cookie from another origin (the
/// [`crate::auth::Caller`] extractor); every body goes through [`crate::extract::Json`] (400
/// for a bad body, 408 when it stalls, 413 past the size limit, 415 without JSON); a query
/// that does not parse is a 400; and any connection may be refused with a 503 when the server
/// is at its connection cap or stopping.
struct Conventions;

/// The schemes the `security(...)` attributes name.
const BEARER: &str = "bearer";
const COOKIE: &str = "cookie";
const TOKEN_QUERY: &str = "token";

impl utoipa::Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token (`kiln_…`): `Authorization: Bearer <token>`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            COOKIE,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::auth::COOKIE,
                "Set by signing in with a browser.",
            ))),
        );
        components.add_security_scheme(
            TOKEN_QUERY,
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "token",
                "WebSocket upgrades only: browsers cannot set headers there.",
            ))),
        );
        let default_secured = openapi.security.as_ref().is_some_and(|s| !s.is_empty());
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                conventional_errors(operation, default_secured);
            }
        }
    }
}

fn conventional_errors(operation: &mut Operation, default_secured: bool) {
    // `security(())` on an operation is one empty requirement: open to anyone.
    let secured = match &operation.security {
        None => default_secured,
        Some(requirements) => {
            let open = serde_json::to_value(requirements)
                .ok()
                .and_then(|v| {
                    v.as_array().map(|a| {
                        a.iter()
                            .any(|r| r.as_object().is_some_and(|o| o.is_empty()))
                    })
                })
                .unwrap_or(false);
            !open
        }
    };
    let queried = operation
        .parameters
        .iter()
        .flatten()
        .any(|p| p.parameter_in == ParameterIn::Query);
    let mut add = |status: &str, description: &str| {
        operation
            .responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| {
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ApiError")))
                            .build(),
                    )
                    .build()
                    .into()
            });
    };
    if secured {
        add("401", "No valid token.");
        // Besides each route's own rules: a browser's cookie sent from another origin.
        add("403", "Not allowed to the caller.");
    }
    if operation.request_body.is_some() {
        add(
            "400",
            "The body is not a JSON object of this shape, or breaks a limit.",
        );
        add("413", "The body is larger than the server takes.");
        add("415", "The body is not sent as `application/json`.");
        add("408", "The body stopped arriving.");
    }
    if queried {
        add("400", "A query parameter does not parse.");
    }
    add(
        "500",
        "kiln failed on its own side; the server log has the details.",
    );
    add(
        "503",
        "The server is at its connection cap or stopping, or a sandbox or the repo's upstream \
         did not answer; try again.",
    );
}
