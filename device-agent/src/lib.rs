//! kiosk-agent: runs on each kiosk (Raspberry Pi). Keeps one outbound MQTT
//! session to the broker, stores every print job in a durable sled inbox
//! before acknowledging it, and prints on ESC/POS printers.

pub mod config;
