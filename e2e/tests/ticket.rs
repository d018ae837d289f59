//! Kitchen tickets end to end: a `ticket` job posted over HTTP reaches the
//! fake printer, and testkit's ESC/POS decoder reads what it got: the beep,
//! each line's style, the wrapping at the printer's 48 columns, the cut.

use kiosk_e2e::TestFleet;
use kiosk_testkit::FakePrinter;
use kiosk_testkit::escpos::{self, Align, Command, Style};
use serde_json::json;

#[tokio::test]
async fn ticket_styles_and_beep_reach_the_printer() {
    let fleet = TestFleet::start(&["k1"]).await;
    let printer = FakePrinter::start().await.unwrap();
    let agent = fleet.start_agent("k1", printer.addr()).await;
    fleet.wait_kiosk("k1", "online").await;

    let body = json!({"printer": "receipt", "document": {"kind":"ticket","beep":true,"lines":[
        {"text":"TABLE 12","size":[2,2],"bold":true,"align":"center"},
        {"separator":true},
        {"item":{"quantity":2,"name":"Burger","modifiers":["no onions","extra cheese"],"note":"well done"}},
        {"text":"Allergy: nuts, sesame, and anything that was near a peanut at any time","invert":true}]}});
    let commands = fleet.print_decoded("k1", &printer, body).await;
    assert_eq!(commands[0], Command::Init);
    assert!(
        commands.contains(&Command::Beep {
            times: 3,
            duration: 3
        }),
        "{commands:?}"
    );
    assert!(matches!(commands.last(), Some(Command::Cut(_))));
    let lines: Vec<(String, Style)> = escpos::lines(&commands)
        .into_iter()
        .map(|l| (l.text, l.style))
        .collect();
    let plain = Style::default();
    let inverted = Style {
        invert: true,
        ..plain
    };
    assert_eq!(
        lines,
        vec![
            (
                "TABLE 12".to_owned(),
                Style {
                    bold: true,
                    width: 2,
                    height: 2,
                    align: Align::Center,
                    ..plain
                }
            ),
            ("-".repeat(48), plain),
            (
                "2 x Burger".to_owned(),
                Style {
                    bold: true,
                    ..plain
                }
            ),
            ("    - no onions".to_owned(), plain),
            ("    - extra cheese".to_owned(), plain),
            ("    NOTE: well done".to_owned(), plain),
            (
                "Allergy: nuts, sesame, and anything that was".to_owned(),
                inverted
            ),
            ("near a peanut at any time".to_owned(), inverted),
        ]
    );

    // A bad ticket is refused at the door, naming the field.
    let (status, resp) = fleet
        .post(
            "/v1/kiosks/k1/print-jobs",
            &json!({"printer":"receipt","document":{"kind":"ticket","lines":[{"text":"x","size":[9,1]}]}}),
        )
        .await;
    assert_eq!(status, 400, "{resp}");
    let message = resp["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("document.lines[0].size"), "{resp}");

    agent.shutdown().await;
}
