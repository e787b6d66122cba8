//! The latest picture of a recording, as PNG.
//!
//! The display keeps the packets from the last keyframe on ([`Gop`]); a
//! request decodes them with a fresh decoder, converts the last picture to
//! RGB and encodes it as PNG. Decoding on demand costs nothing while
//! nobody looks, and at most one keyframe interval when somebody does.

use bytes::Bytes;
use ffmpeg::format::Pixel;
use ffmpeg::software::scaling;
use ffmpeg::util::frame;
use ffmpeg::{codec, ffi};
use ffmpeg_next as ffmpeg;

use crate::Error;

/// The packets of one stream from its last keyframe on, and what a
/// decoder needs to start there.
#[derive(Clone)]
pub(crate) struct Gop {
    /// The recording it belongs to.
    pub generation: u64,
    pub codec: codec::Id,
    pub width: u32,
    pub height: u32,
    pub extradata: Bytes,
    pub packets: Vec<Bytes>,
    pub bytes: usize,
}

/// A decoded picture: tightly packed RGB rows.
pub(crate) struct Rgb {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

/// Decodes the packets; the last picture.
pub(crate) fn decode_last(g: &Gop) -> Result<Rgb, Error> {
    crate::init();
    let dec = ffmpeg::decoder::find(g.codec).ok_or(Error::NoCodec("decoder for the recorded codec"))?;
    let mut ctx = codec::context::Context::new_with_codec(dec);
    // SAFETY: fields of a context we own, set before it is opened. The
    // extradata buffer is FFmpeg-allocated with the zero padding its
    // parsers may read past the end, and freed with the context.
    unsafe {
        let c = ctx.as_mut_ptr();
        (*c).width = g.width as i32;
        (*c).height = g.height as i32;
        if !g.extradata.is_empty() {
            let pad = ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize;
            let p = ffi::av_mallocz(g.extradata.len() + pad) as *mut u8;
            if p.is_null() {
                return Err(Error::ffmpeg("av_mallocz", ffmpeg::Error::Other { errno: ffmpeg::error::ENOMEM }));
            }
            std::ptr::copy_nonoverlapping(g.extradata.as_ptr(), p, g.extradata.len());
            (*c).extradata = p;
            (*c).extradata_size = g.extradata.len() as i32;
        }
    }
    // One thread: frame threading would hold pictures back, and one
    // keyframe interval of a terminal decodes in milliseconds.
    ctx.set_threading(codec::threading::Config { kind: codec::threading::Type::None, count: 1, ..Default::default() });
    let mut dec = ctx.decoder().video().map_err(|e| Error::ffmpeg("opening the decoder", e))?;
    let mut cur = frame::Video::empty();
    let mut last: Option<frame::Video> = None;
    let mut take = |dec: &mut ffmpeg::decoder::Video, last: &mut Option<frame::Video>| {
        while dec.receive_frame(&mut cur).is_ok() {
            *last = Some(std::mem::replace(&mut cur, frame::Video::empty()));
        }
    };
    for p in &g.packets {
        // A damaged packet costs its picture, not the others.
        if let Err(e) = dec.send_packet(&ffmpeg::Packet::copy(p)) {
            tracing::debug!("display: decoding a packet: {e}");
        }
        take(&mut dec, &mut last);
    }
    let _ = dec.send_eof();
    take(&mut dec, &mut last);
    let pic = last.ok_or_else(|| Error::BadStream("no picture decoded".into()))?;
    to_rgb(&pic)
}

fn to_rgb(pic: &frame::Video) -> Result<Rgb, Error> {
    let (w, h) = (pic.width(), pic.height());
    let mut sws = scaling::Context::get(pic.format(), w, h, Pixel::RGB24, w, h, scaling::Flags::BILINEAR)
        .map_err(|e| Error::ffmpeg("sws_getContext", e))?;
    let mut rgb = frame::Video::empty();
    sws.run(pic, &mut rgb).map_err(|e| Error::ffmpeg("sws_scale", e))?;
    let (stride, row) = (rgb.stride(0), w as usize * 3);
    let plane = rgb.data(0);
    let mut data = Vec::with_capacity(row * h as usize);
    for y in 0..h as usize {
        data.extend_from_slice(&plane[y * stride..y * stride + row]);
    }
    Ok(Rgb { width: w, height: h, data })
}

/// Encodes as an 8-bit RGB PNG. Fast compression: terminal pictures are
/// mostly flat colour, which even the fast setting packs well.
pub(crate) fn png(rgb: &Rgb) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, rgb.width, rgb.height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Fast);
    let mut w = enc.write_header().map_err(|e| Error::Png(e.to_string()))?;
    w.write_image_data(&rgb.data).map_err(|e| Error::Png(e.to_string()))?;
    w.finish().map_err(|e| Error::Png(e.to_string()))?;
    Ok(out)
}
