//! S3 (or any S3-compatible service) as the HLS store, through `aws-sdk-s3`: credentials from
//! the usual AWS chain (environment, profile, instance role), objects written with the
//! Content-Type and Cache-Control a CDN in front needs. Every call has a timeout, so a slow or
//! dead S3 costs retries in the uploader's tasks, never a stuck one.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use bytes::Bytes;

use super::store::{Kind, SegmentStore, StoreError, StoreFuture};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    pub region: String,
    /// A non-AWS service (MinIO, R2, ...), e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// Put before every key (`live/` → `live/<stream>/master.m3u8`).
    pub prefix: String,
    /// `endpoint/bucket/key` rather than `bucket.endpoint/key` (most non-AWS services).
    pub path_style: bool,
}

/// Longest any one S3 call may take (a segment is a few MB).
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Rounds of (list 1,000, delete them) one prefix deletion may take.
const MAX_DELETE_ROUNDS: usize = 1000;
/// Pages of 1,000 keys one listing may read (a million objects).
const MAX_LIST_PAGES: usize = 1000;

/// An SDK error as a [`StoreError`], keeping its source chain.
fn s3_error(
    op: &'static str,
    key: &str,
    source: impl std::error::Error + Send + Sync + 'static,
) -> StoreError {
    StoreError::S3 {
        op,
        key: key.to_owned(),
        source: Box::new(source),
    }
}

pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

impl S3Store {
    pub async fn new(c: &S3Config) -> Self {
        Self {
            client: client(c).await,
            bucket: c.bucket.clone(),
            prefix: c.prefix.clone(),
        }
    }
}

/// An S3 client for `c`: region, endpoint, path style, timeouts, credentials from the AWS chain.
pub async fn client(c: &S3Config) -> aws_sdk_s3::Client {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(c.region.clone()))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_timeout(OPERATION_TIMEOUT)
                .build(),
        );
    if let Some(endpoint) = &c.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    let shared = loader.load().await;
    let conf = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(c.path_style)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

impl SegmentStore for S3Store {
    fn put<'a>(&'a self, path: &'a str, body: Bytes, kind: Kind) -> StoreFuture<'a> {
        Box::pin(async move {
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(format!("{}{path}", self.prefix))
                .content_type(kind.content_type())
                .cache_control(kind.cache_control())
                .body(ByteStream::from(body))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| s3_error("put", path, e))
        })
    }

    fn delete<'a>(&'a self, path: &'a str) -> StoreFuture<'a> {
        Box::pin(async move {
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(format!("{}{path}", self.prefix))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| s3_error("delete", path, e))
        })
    }

    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a> {
        Box::pin(async move {
            let full = format!("{}{prefix}", self.prefix);
            // Deleted keys leave the listing, so each round lists from the start again.
            for _ in 0..MAX_DELETE_ROUNDS {
                let listed = self
                    .client
                    .list_objects_v2()
                    .bucket(&self.bucket)
                    .prefix(&full)
                    .max_keys(1000)
                    .send()
                    .await
                    .map_err(|e| s3_error("list", &full, e))?;
                let objects = listed
                    .contents()
                    .iter()
                    .filter_map(|o| o.key())
                    .filter_map(|k| ObjectIdentifier::builder().key(k).build().ok())
                    .collect::<Vec<_>>();
                if objects.is_empty() {
                    return Ok(());
                }
                let delete = Delete::builder()
                    .set_objects(Some(objects))
                    .quiet(true)
                    .build()
                    .map_err(|e| s3_error("delete", &full, e))?;
                self.client
                    .delete_objects()
                    .bucket(&self.bucket)
                    .delete(delete)
                    .send()
                    .await
                    .map_err(|e| s3_error("delete", &full, e))?;
            }
            Err(StoreError::TooMany(full))
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, Vec<String>> {
        Box::pin(async move {
            let full = format!("{}{prefix}", self.prefix);
            let mut found = Vec::new();
            let mut token: Option<String> = None;
            for _ in 0..MAX_LIST_PAGES {
                let page = self
                    .client
                    .list_objects_v2()
                    .bucket(&self.bucket)
                    .prefix(&full)
                    .max_keys(1000)
                    .set_continuation_token(token.take())
                    .send()
                    .await
                    .map_err(|e| s3_error("list", &full, e))?;
                found.extend(
                    page.contents()
                        .iter()
                        .filter_map(|o| o.key())
                        .filter_map(|k| k.strip_prefix(&self.prefix))
                        .map(str::to_owned),
                );
                match page.next_continuation_token() {
                    Some(next) if page.is_truncated() == Some(true) => {
                        token = Some(next.to_owned())
                    }
                    _ => return Ok(found),
                }
            }
            Err(StoreError::TooMany(full))
        })
    }
}
