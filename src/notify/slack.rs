//! Slack incoming webhooks: one POST of a Block Kit message
//! ([`super::render::slack`]).

use super::{http, render, Notice, SendError, SendOptions};

pub(super) async fn send(
    webhook: &str,
    notice: &Notice,
    opts: &SendOptions,
) -> Result<String, SendError> {
    let body = serde_json::to_vec(&render::slack(notice))
        .map_err(|e| SendError::permanent(format!("cannot encode the Slack message: {e}")))?;
    http::post_json(webhook, &[], body, opts).await
}
