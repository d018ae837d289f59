"""A backend in Python: publishes one print job straight to kiosk/<id>/print
with paho-mqtt, QoS 1, and waits for the broker's PUBACK.

usage: publish_job.py HOST PORT USER PASSWORD KIOSK JOB_ID TEXT
"""
import json
import sys

import paho.mqtt.client as mqtt


def main():
    host, port, user, password, kiosk, job_id, text = sys.argv[1:8]
    try:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="backend-py")
    except AttributeError:  # paho-mqtt 1.x
        client = mqtt.Client(client_id="backend-py")
    client.username_pw_set(user, password)
    client.connect(host, int(port), keepalive=10)
    client.loop_start()
    job = {
        "v": 1,
        "job_id": job_id,
        "printer": "receipt",
        "document": {"kind": "text", "text": text + "\n"},
    }
    info = client.publish(f"kiosk/{kiosk}/print", json.dumps(job), qos=1)
    info.wait_for_publish(timeout=10)
    if not info.is_published():
        sys.exit("not acknowledged by the broker")
    client.loop_stop()
    client.disconnect()
    print("published", job_id)


if __name__ == "__main__":
    main()
