// kiosk-fleet reference firmware for a cash acceptor (Arduino Uno/Nano).
//
// Speaks exactly the serial protocol kiosk-agent expects (9600 baud, 8N1,
// lines ending in '\n'):
//
//   board -> agent   READY               after reset (opening the port resets an Uno)
//                    BILL:<minor units>  a bank note was accepted, e.g. BILL:1000
//                    COIN:<minor units>  a coin was accepted, e.g. COIN:200
//                    ERR:<text>          a fault (unknown command, ...)
//   agent -> board   ENABLE              accept money: release the inhibit lines
//                    DISABLE             refuse money: assert the inhibit lines
//
// Hardware (typical pulse-output validators, e.g. a CH-926 coin acceptor
// and an NV9/TB74-style bill validator in pulse mode):
//   - coin acceptor "COIN" pulse output -> pin 2 (INT0), active low
//   - bill validator pulse output       -> pin 3 (INT1), active low
//   - coin acceptor inhibit input       <- pin 4 (HIGH = inhibit)
//   - bill validator inhibit input      <- pin 5 (HIGH = inhibit)
// Each validator sends a train of pulses per item; the number of pulses
// times the value per pulse is the item's value. A train ends when no pulse
// came for TRAIN_GAP_MS. Program the validators so that one pulse is worth
// COIN_PULSE_VALUE / BILL_PULSE_VALUE minor units.
//
// Money is refused from power-on until the agent sends ENABLE, and again
// after DISABLE, so nothing goes in while the kiosk cannot record it.

const uint8_t COIN_PULSE_PIN = 2;
const uint8_t BILL_PULSE_PIN = 3;
const uint8_t COIN_INHIBIT_PIN = 4;
const uint8_t BILL_INHIBIT_PIN = 5;

const unsigned long COIN_PULSE_VALUE = 10;   // minor units per coin pulse (0.10 EUR)
const unsigned long BILL_PULSE_VALUE = 500;  // minor units per bill pulse (5.00 EUR)
const unsigned long TRAIN_GAP_MS = 200;      // silence that ends a pulse train
const unsigned long DEBOUNCE_US = 2000;      // ignore edges closer than this

volatile unsigned int coinPulses = 0;
volatile unsigned int billPulses = 0;
volatile unsigned long lastCoinPulseMs = 0;
volatile unsigned long lastBillPulseMs = 0;
volatile unsigned long lastCoinEdgeUs = 0;
volatile unsigned long lastBillEdgeUs = 0;

char line[32];
uint8_t lineLen = 0;
bool lineOverflow = false;

void onCoinPulse() {
  unsigned long now = micros();
  if (now - lastCoinEdgeUs < DEBOUNCE_US) return;
  lastCoinEdgeUs = now;
  coinPulses++;
  lastCoinPulseMs = millis();
}

void onBillPulse() {
  unsigned long now = micros();
  if (now - lastBillEdgeUs < DEBOUNCE_US) return;
  lastBillEdgeUs = now;
  billPulses++;
  lastBillPulseMs = millis();
}

void setAccepting(bool accept) {
  digitalWrite(COIN_INHIBIT_PIN, accept ? LOW : HIGH);
  digitalWrite(BILL_INHIBIT_PIN, accept ? LOW : HIGH);
}

// Reports a finished pulse train of one validator as a credit line.
void flushTrain(volatile unsigned int &pulses, volatile unsigned long &lastMs,
                unsigned long valuePerPulse, const char *kind) {
  noInterrupts();
  unsigned int count = pulses;
  unsigned long last = lastMs;
  bool done = count > 0 && millis() - last >= TRAIN_GAP_MS;
  if (done) pulses = 0;
  interrupts();
  if (done) {
    Serial.print(kind);
    Serial.print(':');
    Serial.println(count * valuePerPulse);
  }
}

void handleCommand(const char *cmd) {
  if (strcmp(cmd, "ENABLE") == 0) {
    setAccepting(true);
  } else if (strcmp(cmd, "DISABLE") == 0) {
    setAccepting(false);
  } else if (cmd[0] != '\0') {
    Serial.println(F("ERR:unknown command"));
  }
}

void readCommands() {
  while (Serial.available() > 0) {
    char c = (char)Serial.read();
    if (c == '\r') continue;
    if (c == '\n') {
      if (lineOverflow) {
        Serial.println(F("ERR:line too long"));
      } else {
        line[lineLen] = '\0';
        handleCommand(line);
      }
      lineLen = 0;
      lineOverflow = false;
    } else if (lineLen < sizeof(line) - 1) {
      line[lineLen++] = c;
    } else {
      lineOverflow = true;
    }
  }
}

void setup() {
  pinMode(COIN_INHIBIT_PIN, OUTPUT);
  pinMode(BILL_INHIBIT_PIN, OUTPUT);
  setAccepting(false);
  pinMode(COIN_PULSE_PIN, INPUT_PULLUP);
  pinMode(BILL_PULSE_PIN, INPUT_PULLUP);
  attachInterrupt(digitalPinToInterrupt(COIN_PULSE_PIN), onCoinPulse, FALLING);
  attachInterrupt(digitalPinToInterrupt(BILL_PULSE_PIN), onBillPulse, FALLING);
  Serial.begin(9600);
  Serial.println(F("READY"));
}

void loop() {
  readCommands();
  flushTrain(coinPulses, lastCoinPulseMs, COIN_PULSE_VALUE, "COIN");
  flushTrain(billPulses, lastBillPulseMs, BILL_PULSE_VALUE, "BILL");
}
