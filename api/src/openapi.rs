//! `GET /api/openapi.json`: the OpenAPI 3 document, generated from the handlers' annotations.

use axum::routing::get;
use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::ApiState;

#[derive(OpenApi)]
#[openapi(
    info(title = "Glint API", description = "Users, streams, follows, notifications, categories, replays, chat and analytics of a Glint server."),
    paths(
        crate::users::register, crate::users::login, crate::users::refresh, crate::users::logout,
        crate::users::me, crate::users::profile,
        crate::streams::list, crate::streams::get_one, crate::streams::create, crate::streams::update,
        crate::streams::rotate_key,
        crate::follows::follow, crate::follows::unfollow, crate::follows::followers, crate::follows::following,
        crate::notifications::list, crate::notifications::mark_read, crate::notifications::mark_all_read,
        crate::notifications::stream,
        crate::categories::list,
        crate::videos::list, crate::videos::get_one, crate::videos::remove,
        crate::analytics::list, crate::analytics::get_one,
        crate::chat::moderators, crate::chat::add_moderator, crate::chat::remove_moderator,
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

pub fn router() -> Router<ApiState> {
    Router::new().route(
        "/api/openapi.json",
        get(|| async { axum::Json(ApiDoc::openapi()) }),
    )
}
