//! What a recording holds: its video frames and duration, read back with
//! FFmpeg's demuxer (what `mesh demo` reports when it is done).

use std::path::Path;

use crate::Error;

/// The video of a recording.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Probe {
    pub frames: u64,
    /// From the first frame's start to the last frame's end, in seconds.
    pub seconds: f64,
    pub width: u32,
    pub height: u32,
}

/// Counts the video packets of `path` and spans their timestamps.
pub fn probe(path: &Path) -> Result<Probe, Error> {
    crate::init();
    let mut input = ffmpeg_next::format::input(&path).map_err(|e| Error::ffmpeg("open recording", e))?;
    let stream = input
        .streams()
        .best(ffmpeg_next::media::Type::Video)
        .ok_or_else(|| Error::BadStream("no video stream".into()))?;
    let index = stream.index();
    let tb = stream.time_base();
    let params = ffmpeg_next::codec::context::Context::from_parameters(stream.parameters())
        .map_err(|e| Error::ffmpeg("codec parameters", e))?;
    let video = params.decoder().video().map_err(|e| Error::ffmpeg("video parameters", e))?;
    let (width, height) = (video.width(), video.height());
    let (mut frames, mut first, mut end) = (0u64, i64::MAX, i64::MIN);
    for (s, packet) in input.packets() {
        if s.index() != index {
            continue;
        }
        frames += 1;
        if let Some(pts) = packet.pts() {
            first = first.min(pts);
            end = end.max(pts + packet.duration().max(0));
        }
    }
    let seconds =
        if frames == 0 { 0.0 } else { (end - first) as f64 * tb.numerator() as f64 / tb.denominator() as f64 };
    Ok(Probe { frames, seconds, width, height })
}
