//! The probe services, kinds `echo` and `sink`: a round trip and a
//! stream to measure a path by, with nothing of their own in the way.

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::conv::{Conv, Msg, Service};

/// Sends every message back as it came.
pub struct Echo;

impl Service for Echo {
    fn serve(&self, mut conv: Conv) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            while let Some(m) = conv.rx.recv().await {
                match m {
                    Msg::Data(b) => {
                        if conv.tx.send(b).await.is_err() {
                            break;
                        }
                    }
                    Msg::Eof => {
                        conv.tx.eof().await;
                        break;
                    }
                    Msg::Error(_) => break,
                }
            }
        })
    }
}

/// Reads and discards; at end of input answers the byte count it got, in
/// decimal, so a writer knows when everything has arrived.
pub struct Sink;

impl Service for Sink {
    fn serve(&self, mut conv: Conv) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut total: u64 = 0;
            while let Some(m) = conv.rx.recv().await {
                match m {
                    Msg::Data(b) => total += b.len() as u64,
                    Msg::Eof => {
                        let _ = conv.tx.send(Bytes::from(total.to_string())).await;
                        conv.tx.eof().await;
                        break;
                    }
                    Msg::Error(_) => break,
                }
            }
        })
    }
}
