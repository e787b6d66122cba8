//! The `encoder` and `display` services: terminal frames to H.264 in
//! fragmented MP4 through FFmpeg (ffmpeg-next), and MP4 to a file that
//! plays while it grows, with its latest picture as PNG.
//!
//! # Modules
//!
//! - [`encoder`]: [`Encoder`], frames to MP4 bytes on the caller's thread,
//!   and [`EncoderSettings`].
//! - [`service`]: [`EncoderService`], the `encoder` service kind: one
//!   stream per conversation.
//! - [`display`]: [`DisplayService`], the `display` service kind: one
//!   recording per conversation.
//! - `avio` (private): the MP4 muxer and demuxer on in-memory I/O, through
//!   `ffmpeg_next::ffi` (custom `AVIOContext` callbacks).
//! - `picture` (private): the latest picture, decoded when asked, as PNG.
//! - `boxes` (private): top-level MP4 box headers: is it MP4, how many
//!   fragments.
//!
//! # The stream
//!
//! - H.264 from libx264, preset `veryfast`, tune `zerolatency` (no
//!   B-frames, no lookahead: a frame comes out when it goes in), one
//!   thread; YUV 4:2:0 from RGBA by swscale (BT.601, limited range, tagged
//!   so). Rate: CRF 23 under a VBV ceiling of `bitrate` bits per second,
//!   so a quiet terminal costs almost nothing and a busy one no more than
//!   the ceiling.
//! - MP4 with `movflags=frag_keyframe+empty_moov+default_base_moof`. The
//!   first output is the init segment alone (ftyp, moov without samples);
//!   then fragments (moof, mdat); at the end the last fragment and the
//!   index (mfra). Any prefix ending on a fragment is a playable file.
//! - Time: a 90 kHz clock; a frame's time is its `pts_us` less the first
//!   frame's, rounded to a tick; a time that does not move forward is moved
//!   one tick on. A pause is a pause: inside a fragment the frame before
//!   it lasts until the next; across a fragment boundary the next fragment
//!   is marked discontinuous (`frag_discont`), so it starts at its own
//!   time (tfdt) instead of where the muxer would put it. The end of the
//!   session is the end of the video: the session's [`mesh_frame::End`]
//!   brings the last picture once more, one nominal frame time before the
//!   end, so a terminal that prints and then rests until it exits is shown
//!   resting (as asciinema and VHS hold their last frame), not cut at its
//!   last change.
//! - Keyframes every `2 × fps` frames (and at scene changes): counted in
//!   frames because the work a keyframe bounds (seeking, the display's
//!   picture) is per frame. Fragments start at keyframes, and are also cut
//!   [`service::MAX_LATENCY`] (200 ms) after their first frame arrived: a
//!   terminal that changes and then rests shows its last screen within
//!   that, not at a keyframe that may never come.
//! - Size: fixed by the first frame, rounded down to even numbers (the odd
//!   last row or column is cropped). A frame of another size is scaled to
//!   it. Chosen over starting a new init segment: a second moov in the
//!   middle of one file is not playable by common players, and a recording
//!   is one file; a resized terminal looks stretched until the next
//!   recording, instead of breaking the file.
//! - Settings (`fps`, `bitrate`) are read when a conversation begins; a
//!   change applies to the next stream. [`EncoderSettings::apply`] takes
//!   ctl lines (`fps 30`, `bitrate 1000000`), `Display` writes them back.
//!
//! # Conversations
//!
//! `encoder`: each message is one CBOR [`mesh_frame::Frame`], or the
//! session's [`mesh_frame::End`]; the replies
//! are the MP4 bytes in order, the init segment first and alone, then
//! whole fragments (split into several messages only above the mesh's
//! message limit). End of input finishes the stream, then end of output.
//! A bad message (not a CBOR frame, wrong byte count, a side outside
//! 2..=8192) is logged as a warning and ends the conversation: the stream
//! is finished first, so what came before is a complete file downstream,
//! then end of output, and the service stops reading, so the sender's next
//! write fails with a hangup. FFmpeg objects are not `Send`: each
//! conversation has its own OS thread for the [`Encoder`], fed by a queue
//! of 4 frames, so a slow encoder slows the sender through flow control.
//!
//! `display`: messages are MP4 bytes, split anyhow. A conversation is a
//! recording: it truncates the output file (creating its directories) and
//! appends and flushes every message, so the file plays while it grows.
//! Bytes that are not MP4 (no leading ftyp, a broken box header) end the
//! recording with an error in the status. A newer recording takes the
//! file over; an older one still sending is ended. The latest picture: a
//! demuxer thread per recording keeps the packets from the last keyframe
//! on (no decoding while recording); [`DisplayService::latest_png`]
//! decodes them when asked and caches the PNG until the next frame.
//! [`DisplayService::status`] gives `key value` lines.
//!
//! # Cost
//!
//! Measured on the 2-core development machine (FFmpeg 5.1 of Debian 12,
//! test build): encoding 640x384 frames (80x24 cells of 8x16) takes 2.2 to
//! 3.5 ms a frame whatever the content (moving colour bars, a screen
//! scrolling every frame, typing), about a tenth of one core at 30 frames
//! a second. `ultrafast` was 1.4 to 1.6 ms with files about 40% larger.
//! The display only demuxes while recording; a picture decodes in a few
//! milliseconds.
//!
//! # System
//!
//! Building needs pkg-config, libclang (bindgen) and the FFmpeg headers:
//! Debian packages `pkg-config clang libclang-dev libavcodec-dev
//! libavformat-dev libavutil-dev libswscale-dev` (libavcodec brings
//! libx264). The tests also run `ffprobe`, from package `ffmpeg`. FFmpeg's
//! own log goes to standard error, errors only: at its default level
//! libx264 prints a banner for every stream.

use std::sync::Once;

pub use ffmpeg_next;

mod avio;
mod boxes;
pub mod display;
pub mod encoder;
mod picture;
pub mod probe;
pub mod service;

pub use display::DisplayService;
pub use encoder::{Encoder, EncoderSettings};
pub use probe::{probe, Probe};
pub use service::EncoderService;

/// Why encoding or decoding failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A message that is not a usable frame.
    #[error("bad frame: {0}")]
    BadFrame(String),
    #[error("bad settings: {0}")]
    Settings(String),
    /// This FFmpeg lacks a codec we need.
    #[error("no {0} in this FFmpeg")]
    NoCodec(&'static str),
    #[error("{what}: {err}")]
    Ffmpeg { what: &'static str, err: ffmpeg_next::Error },
    #[error("bad stream: {0}")]
    BadStream(String),
    #[error("png: {0}")]
    Png(String),
}

impl Error {
    pub(crate) fn ffmpeg(what: &'static str, err: ffmpeg_next::Error) -> Error {
        Error::Ffmpeg { what, err }
    }
}

/// Initialises FFmpeg once per process. Its log goes to standard error;
/// only errors are let through, since libx264 reports every stream it
/// opens at the default level and our own errors say what failed.
pub(crate) fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Err(e) = ffmpeg_next::init() {
            tracing::warn!("ffmpeg init: {e}");
        }
        ffmpeg_next::log::set_level(ffmpeg_next::log::Level::Error);
    });
}
