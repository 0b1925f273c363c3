//! Categories, with how many streams are live in each.

use std::collections::HashMap;

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};
use surrealdb::types::SurrealValue;
use utoipa::ToSchema;

use crate::error::Result;
use crate::ApiState;

pub fn router() -> Router<ApiState> {
    Router::new().route("/api/categories", get(list))
}

#[derive(Serialize, Deserialize, ToSchema, SurrealValue)]
pub struct Category {
    pub slug: String,
    pub name: String,
    #[serde(default)]
    #[surreal(default)]
    pub live_streams: i64,
}

#[derive(Deserialize, SurrealValue)]
struct Count {
    category: Option<String>,
    n: i64,
}

#[utoipa::path(get, path = "/api/categories", responses((status = 200, body = [Category])))]
pub(crate) async fn list(State(st): State<ApiState>) -> Result<axum::Json<Vec<Category>>> {
    let mut res = st
        .db
        .query("SELECT slug, name FROM category ORDER BY name ASC; SELECT category, count() AS n FROM stream WHERE live = true GROUP BY category")
        .await?;
    let mut cats: Vec<Category> = res.take(0)?;
    let counts: Vec<Count> = res.take(1)?;
    let counts: HashMap<String, i64> = counts
        .into_iter()
        .filter_map(|c| c.category.map(|k| (k, c.n)))
        .collect();
    for c in &mut cats {
        c.live_streams = counts.get(&c.slug).copied().unwrap_or(0);
    }
    Ok(axum::Json(cats))
}
