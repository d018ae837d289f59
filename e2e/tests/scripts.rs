//! Text in many scripts end to end: a text job with lines in seven scripts
//! and Arabic goes over HTTP to an agent whose printer has the TM-T88V
//! profile (its code pages and `ESC t` numbers from the ESC/POS printer
//! database) and a GB18030 double-byte mode. testkit's decoder reads what
//! the fake printer got; the expected bytes of each sample are the code
//! pages' own (Python's `cp858`, `cp852`, `cp737`, `cp866`, `cp857`,
//! `cp862` and `gb2312` codecs), not our encoder's.

use kiosk_agent::config::{AgentConfig, Checked};
use kiosk_e2e::TestFleet;
use kiosk_testkit::FakePrinter;
use kiosk_testkit::escpos::Command;
use serde_json::json;

fn text(bytes: &[u8]) -> Command {
    Command::Text(bytes.to_vec())
}

fn contains_run(commands: &[Command], run: &[Command]) -> bool {
    commands.windows(run.len()).any(|w| w == run)
}

#[tokio::test]
async fn each_script_goes_out_in_a_code_page_that_has_it_and_arabic_as_an_image() {
    let fleet = TestFleet::start(&["k1"]).await;
    let printer = FakePrinter::start().await.unwrap();
    let toml = fleet.agent_toml("k1", printer.addr()).replace(
        "code_page = \"PC858\"",
        "code_page = \"PC858\"\nprofile = \"TM-T88V\"\ncjk = \"gb18030\"",
    );
    let _agent = fleet
        .start_agent_with(AgentConfig::from_toml(&toml).unwrap())
        .await;
    fleet.wait_kiosk("k1", "online").await;

    let lines = [
        "Crème brûlée, Grüße",
        "Příliš žluťoučký kůň",
        "Καλημέρα",
        "Привет, мир",
        "Günaydın, İstanbul şğ",
        "שלום",
        "你好",
        "شاورما",
    ];
    let body = json!({"printer": "receipt",
        "document": {"kind": "text", "text": lines.join("\n"), "cut": true}});
    let commands = fleet.print_decoded("k1", &printer, body).await;
    // ESC @, then the configured start page: CP858 is 19 on a TM-T88V.
    assert_eq!(commands[..2], [Command::Init, Command::CodePage(19)]);

    let expected: [&[Command]; 7] = [
        // French and German: all in CP858, no switch.
        &[text(b"Cr\x8Ame br\x96l\x82e, Gr\x81\xE1e")],
        // Czech: ř is not in CP858; CP852 (18) has the whole rest.
        &[
            text(b"P"),
            Command::CodePage(18),
            text(b"\xFD\xA1li\xE7 \xA7lu\x9Cou\x9Fk\xEC k\x85\xE5"),
        ],
        // Greek: CP737 (14), the first of the profile's Greek pages.
        &[
            Command::CodePage(14),
            text(b"\x89\x98\xA2\x9E\xA3\xE2\xA8\x98"),
        ],
        // Cyrillic: CP866 (17).
        &[
            Command::CodePage(17),
            text(b"\x8F\xE0\xA8\xA2\xA5\xE2, \xAC\xA8\xE0"),
        ],
        // Turkish: ü is in many pages, ı only in CP857 (13) and CP1254:
        // one switch, to the first that has the whole run.
        &[
            text(b"G"),
            Command::CodePage(13),
            text(b"\x81nayd\x8Dn, \x98stanbul \x9F\xA7"),
        ],
        // Hebrew: CP862 (36), in visual order (right to left).
        &[Command::CodePage(36), text(b"\x8D\x85\x8C\x99")],
        // Chinese: the double-byte mode, GB2312 bytes.
        &[
            Command::KanjiOn,
            text(b"\xC4\xE3\xBA\xC3"),
            Command::KanjiOff,
        ],
    ];
    for (line, run) in lines.iter().zip(expected) {
        assert!(
            contains_run(&commands, run),
            "{line}: {run:?} not in {commands:?}"
        );
    }

    let rasters = commands
        .iter()
        .filter(|c| matches!(c, Command::Raster { .. }))
        .count();
    if kiosk_testkit::noto_fonts_installed() {
        // Arabic: no code page of the printer is used for it (it needs
        // joining forms): drawn with Noto Sans Arabic, one 30-dot line in
        // two bands.
        assert_eq!(rasters, 2, "{commands:?}");
        let printed: Vec<u8> = commands
            .iter()
            .filter_map(|c| match c {
                Command::Text(t) => Some(t.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        assert!(!printed.contains(&b'?'), "nothing printed as ?");
    }
    assert!(matches!(commands.last(), Some(Command::Cut(_))));
}
