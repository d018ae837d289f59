//! Receipt images end to end: a receipt with a small PNG posted over HTTP
//! reaches the fake printer as `GS v 0` bands that testkit's decoder reads
//! back dot for dot; a receipt whose image is not a PNG or JPEG is refused
//! with 400 naming the field.

use base64::Engine as _;
use image::{GrayImage, ImageFormat, Luma};
use kiosk_e2e::TestFleet;
use kiosk_testkit::FakePrinter;
use kiosk_testkit::escpos::{Align, Command};
use serde_json::json;

fn png(img: &GrayImage) -> String {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).unwrap();
    base64::engine::general_purpose::STANDARD.encode(out.into_inner())
}

#[tokio::test]
async fn a_receipt_image_reaches_the_printer_dot_for_dot() {
    let fleet = TestFleet::start(&["k1"]).await;
    let printer = FakePrinter::start().await.unwrap();
    let agent = fleet.start_agent("k1", printer.addr()).await;
    fleet.wait_kiosk("k1", "online").await;

    // 16×30, black and white only: dithering leaves it as it is.
    let img = GrayImage::from_fn(16, 30, |x, y| {
        Luma([if (x + y / 2) % 3 == 0 { 0 } else { 255 }])
    });
    let body = json!({"printer": "receipt", "document": {"kind": "receipt",
        "header": ["Shop", {"image": {"data": png(&img), "align": "right", "width": 16}}],
        "items": [{"quantity": 1, "name": "Tea", "amount": 250}],
        "total": 250, "currency": "EUR"}});
    let commands = fleet.print_decoded("k1", &printer, body).await;
    let first = commands
        .iter()
        .position(|c| matches!(c, Command::Raster { .. }))
        .unwrap();
    assert!(commands[..first].contains(&Command::Align(Align::Right)));
    let mut heights = Vec::new();
    let mut rows: Vec<Vec<bool>> = Vec::new();
    for c in &commands {
        if let Command::Raster {
            mode,
            width_bytes,
            height,
            data,
        } = c
        {
            assert_eq!((*mode, *width_bytes), (0, 2));
            heights.push(*height);
            for row in data.chunks(2) {
                rows.push(
                    (0..16)
                        .map(|x| row[x / 8] & (0x80 >> (x % 8)) != 0)
                        .collect(),
                );
            }
        }
    }
    assert_eq!(heights, [24, 6]);
    let want: Vec<Vec<bool>> = (0..30)
        .map(|y| (0..16).map(|x| img.get_pixel(x, y).0[0] < 128).collect())
        .collect();
    assert_eq!(rows, want);

    // Not an image: refused at the door, naming the field.
    let not_png = base64::engine::general_purpose::STANDARD.encode(b"GIF89a, or so it says");
    let (status, resp) = fleet
        .post(
            "/v1/kiosks/k1/print-jobs",
            &json!({"printer": "receipt", "document": {"kind": "receipt",
                "footer": [{"image": {"data": not_png}}],
                "items": [], "total": 0, "currency": "EUR"}}),
        )
        .await;
    assert_eq!(status, 400, "{resp}");
    let message = resp["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("document.footer[0].image.data"), "{resp}");
    let (status, resp) = fleet
        .post(
            "/v1/kiosks/k1/print-jobs",
            &json!({"printer": "receipt", "document": {"kind": "receipt",
                "header": [{"image": {"data": "not base64!"}}],
                "items": [], "total": 0, "currency": "EUR"}}),
        )
        .await;
    assert_eq!(status, 400, "{resp}");
    let message = resp["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("document.header[0].image.data"), "{resp}");

    agent.shutdown().await;
}
