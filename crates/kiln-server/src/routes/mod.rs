//! Route handlers, one module per resource, and the OpenAPI document built from them.

pub(crate) mod access;
pub(crate) mod repos;
pub(crate) mod sessions;
pub(crate) mod users;
pub(crate) mod ws;

use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "kiln",
        description = "Hosted background coding agents: the control-plane API. \
        Authenticate with `Authorization: Bearer <token>`."
    ),
    paths(
        users::me,
        users::create_user,
        users::list_users,
        users::create_token,
        users::list_tokens,
        users::revoke_token,
        crate::login::create_login_link,
        crate::login::logout,
        repos::create_repo,
        repos::list_repos,
        repos::get_repo,
        repos::update_repo,
        repos::warm,
        repos::pool,
        repos::collect_garbage,
        access::get_access,
        access::set_access,
        repos::build_image,
        repos::list_images,
        repos::get_image,
        repos::image_log,
        sessions::create_session,
        sessions::list_sessions,
        sessions::get_session,
        sessions::update_session,
        sessions::send_prompt,
        sessions::stop_session,
        sessions::create_share,
        sessions::join,
        sessions::events,
        sessions::start_stats,
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
