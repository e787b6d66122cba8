//! pty -> parser through a real router: a shell's coloured output comes
//! back to the opener as screen snapshots, the pipeline being the return
//! path of the conversation with the pty.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mesh_frame::{decode, Snapshot};
use ns::conv::Msg;
use ns::{Addr, Config, Router};
use srv::parser::{xterm_color, ParserService};
use srv::pty::PtyService;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn shell_output_becomes_coloured_snapshots() {
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let router = Router::new(Config::new("a".parse().unwrap()), stop);
    let sh = vec!["sh".to_string()];
    router.add_service("pty".parse().unwrap(), Arc::new(PtyService::new(sh, (60, 10)).unwrap()));
    router.add_service("parser".parse().unwrap(), Arc::new(ParserService::new((60, 10), 30).unwrap()));
    let mut conv = router.open(Addr::parse("/svc/pty").unwrap(), vec![Addr::parse("/svc/parser").unwrap()]);
    conv.tx.send(Bytes::from_static(b"printf '\\033[32mGREEN\\033[0m\\n'; exit\n")).await.unwrap();

    let mut snaps = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), conv.rx.recv()).await.expect("timed out") {
            // The session's End closes the snapshots.
            Some(Msg::Data(b)) if mesh_frame::end(&b).is_some() => {}
            Some(Msg::Data(b)) => {
                let s: Snapshot = decode(&b).unwrap();
                s.validate().unwrap();
                assert_eq!((s.cols, s.rows, s.seq), (60, 10, snaps.len() as u64));
                snaps.push(s);
            }
            Some(Msg::Eof) | None => break,
            Some(Msg::Error(e)) => panic!("error {e}"),
        }
    }
    // The typed line shows GREEN in the default colour; the output line
    // shows it in green.
    let last = snaps.last().expect("snapshots");
    let green = (0..last.rows).find_map(|r| {
        let text: String = (0..last.cols).map(|c| last.cell(c, r).unwrap().ch()).collect();
        let at = text.find("GREEN")? as u16;
        let all_green = (at..at + 5).all(|c| last.cell(c, r).unwrap().fg() == xterm_color(2));
        all_green.then_some(r)
    });
    assert!(green.is_some(), "no green GREEN in {snaps:#?}");
}
