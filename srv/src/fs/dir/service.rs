//! A dir service's conversations.
//!
//! Its files are under `svc/S/root/`; a conversation (`cat svc/S/data`,
//! `mesh send /svc/S < /dev/null`) gets, at the end of its input, the
//! names at the top of the root, one a line, directories with a trailing
//! `/`, then end of file, so the service can be looked at without FUSE.
//! A message sent to it fails the conversation: nothing is dropped
//! silently.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use ns::conv::{Conv, Msg, Service};
use ns::error::{self, EBADPATH};

use super::Root;
use crate::fs::tree::FileKind;

/// The service side of a dir kind.
pub struct DirService {
    root: Arc<Root>,
    name: String,
}

impl DirService {
    pub fn new(root: Arc<Root>, name: &str) -> DirService {
        DirService { root, name: name.to_string() }
    }
}

impl Service for DirService {
    fn serve(&self, mut conv: Conv) -> BoxFuture<'static, ()> {
        let (root, name) = (self.root.clone(), self.name.clone());
        Box::pin(async move {
            // Input first: a message is refused at once, so its writer's
            // conversation fails while it is still there to see it.
            match conv.rx.recv().await {
                Some(Msg::Data(_)) => {
                    let why = error::detail(
                        EBADPATH,
                        format!("a dir service takes no messages; its files are under svc/{name}/root"),
                    );
                    return conv.tx.send_error(&why).await;
                }
                Some(Msg::Eof) => {}
                Some(Msg::Error(_)) | None => return,
            }
            let listing = tokio::task::spawn_blocking(move || root.list(&[])).await;
            let text = match listing {
                Ok(Ok(entries)) => entries
                    .iter()
                    .map(|e| if e.kind == FileKind::Dir { format!("{}/\n", e.name) } else { format!("{}\n", e.name) })
                    .collect::<String>(),
                Ok(Err(e)) => return conv.tx.send_error(&e).await,
                Err(e) => return conv.tx.send_error(&e.to_string()).await,
            };
            if !text.is_empty() && conv.tx.send(Bytes::from(text)).await.is_err() {
                return;
            }
            conv.tx.eof().await;
        })
    }
}
