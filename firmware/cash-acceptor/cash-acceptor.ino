// kiosk-fleet reference firmware for a cash acceptor (Arduino Uno/Nano),
// serial protocol v2 (see README.md beside this file for the full rules).
//
// 9600 baud, 8N1, lines end in '\n'; a '\r' before it is ignored.
//
//   board -> host  READY:v2:<boot id>      after every power-up or reset; the
//                                          boot id is 8 lowercase hex digits,
//                                          new on every reset
//                  CREDIT:<seq>:<BILL|COIN>:<minor units>
//                                          money went in, e.g. CREDIT:1:COIN:200;
//                                          seq counts 1, 2, 3, ... from each boot
//                  ERR:<text>              a fault: ERR:lease, ERR:full,
//                                          ERR:unknown command, ERR:line too long,
//                                          ERR:bad ack
//   host -> board  ENABLE                  accept money (and renew the lease)
//                  DISABLE                 refuse money
//                  ACK:<seq>               the host has that credit on disk:
//                                          forget it (exactly that seq)
//                  HELLO                   say READY:v2:<boot id> again (no
//                                          reset, nothing forgotten) and
//                                          re-send every unacknowledged credit
//                                          now: a host that restarted while
//                                          the board kept running learns which
//                                          boot the seqs belong to
//
// At-least-once: every credit stays in RAM (CREDIT_SLOTS of them) and is sent
// again every RESEND_MS until the host acknowledges that seq; the host
// deduplicates by (boot id, seq). RAM is lost on reset, which is why the boot
// id changes: a seq is only meaningful together with its boot id.
//
// When all slots hold unacknowledged credits the board asserts the inhibit
// lines and says ERR:full once; it accepts again (if still enabled and leased)
// as soon as an ACK frees a slot.
//
// Acceptance is a lease: money is accepted only while enabled AND the host
// sent a line (any line) within the last LEASE_MS. The host repeats ENABLE at
// least once a second while it wants money. When the lease runs out the board
// inhibits, says ERR:lease once, and stays inhibited until the next ENABLE:
// a dead host or a pulled cable cannot leave the slot open.
//
// Pulses that arrive while inhibited (a coin already falling) are still
// counted and reported: money that physically went in is always reported.
// While every slot is taken, a finished pulse train waits (and further pulses
// of that validator add to it) until a slot is free.
//
// Hardware (typical pulse-output validators, e.g. a CH-926 coin acceptor
// and an NV9/TB74-style bill validator in pulse mode):
//   - coin acceptor "COIN" pulse output -> pin 2 (INT0), active low
//   - bill validator pulse output       -> pin 3 (INT1), active low
//   - coin acceptor inhibit input       <- pin 4 (HIGH = inhibit)
//   - bill validator inhibit input      <- pin 5 (HIGH = inhibit)
//   - A0 left unconnected: its floating input is noise for the boot id
// Each validator sends a train of pulses per item; the number of pulses
// times the value per pulse is the item's value. A train ends when no pulse
// came for TRAIN_GAP_MS. Program the validators so that one pulse is worth
// COIN_PULSE_VALUE / BILL_PULSE_VALUE minor units.
//
// Money is refused from power-on until the host sends ENABLE, after DISABLE,
// after the lease ran out and while the buffer is full, so nothing goes in
// while the kiosk cannot record it.
//
// Boot id: mixed from (1) a word in .noinit SRAM, which holds noise after a
// power-up and the previous boot's pool after a warm reset (DTR, reset
// button, simavr's reset), so a warm reset never repeats the last id even
// without noise; (2) 64 readings of the floating A0 pin; (3) micros() after
// each reading. In simavr, SRAM starts zeroed and timing is deterministic, so
// the harness (sim/harness.c) feeds A0 a fresh random voltage on every
// conversion (seeded from /dev/urandom, or from its -s option).

#include <avr/sleep.h>

const uint8_t COIN_PULSE_PIN = 2;
const uint8_t BILL_PULSE_PIN = 3;
const uint8_t COIN_INHIBIT_PIN = 4;
const uint8_t BILL_INHIBIT_PIN = 5;
const uint8_t NOISE_PIN = A0;

const unsigned long COIN_PULSE_VALUE = 10;   // minor units per coin pulse (0.10 EUR)
const unsigned long BILL_PULSE_VALUE = 500;  // minor units per bill pulse (5.00 EUR)
const unsigned long TRAIN_GAP_MS = 200;      // silence that ends a pulse train
const unsigned long DEBOUNCE_US = 2000;      // ignore edges closer than this

const uint8_t CREDIT_SLOTS = 16;             // unacknowledged credits kept
const unsigned long RESEND_MS = 1000;        // re-send an unacknowledged credit
const unsigned long LEASE_MS = 3000;         // acceptance without a host line

volatile unsigned int coinPulses = 0;
volatile unsigned int billPulses = 0;
volatile unsigned long lastCoinPulseMs = 0;
volatile unsigned long lastBillPulseMs = 0;
volatile unsigned long lastCoinEdgeUs = 0;
volatile unsigned long lastBillEdgeUs = 0;

// One unacknowledged credit; seq 0 marks a free slot.
struct Credit {
  unsigned long seq;
  unsigned long amount;    // minor units
  unsigned long sentMs;    // millis() of the last send
  bool sent;               // sent at least once
  bool bill;               // BILL, else COIN
};

Credit credits[CREDIT_SLOTS];
unsigned long nextSeq = 1;

uint32_t bootId = 0;           // this boot's id, made in setup()
bool enabled = false;          // ENABLE seen and neither DISABLE nor lease expiry since
unsigned long lastHostLineMs;  // millis() of the last complete line from the host
bool accepting = false;        // the inhibit lines are released
bool fullReported = false;     // ERR:full said for the current full episode

char line[32];
uint8_t lineLen = 0;
bool lineOverflow = false;

// Survives a warm reset: the C runtime does not zero .noinit.
uint32_t entropyPool __attribute__((section(".noinit")));

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

// A 32-bit mixing step (murmur3's finalizer around an xor): a bijection of
// h for a given v, so different pools never collapse into one.
uint32_t mix(uint32_t h, uint32_t v) {
  h ^= v;
  h *= 0x9E3779B1UL;
  h ^= h >> 15;
  h *= 0x85EBCA77UL;
  h ^= h >> 13;
  return h;
}

uint32_t makeBootId() {
  uint32_t h = entropyPool;
  for (uint8_t i = 0; i < 64; i++) {
    uint32_t sample = (uint32_t)analogRead(NOISE_PIN);
    h = mix(h, (sample << 16) ^ (uint32_t)micros() ^ i);
  }
  entropyPool = h;
  return mix(h, 0x2545F491UL);
}

void printHex32(uint32_t v) {
  static const char digits[] = "0123456789abcdef";
  char text[9];
  for (int8_t i = 7; i >= 0; i--) {
    text[i] = digits[v & 0xf];
    v >>= 4;
  }
  text[8] = '\0';
  Serial.print(text);
}

int8_t freeSlot() {
  for (uint8_t i = 0; i < CREDIT_SLOTS; i++) {
    if (credits[i].seq == 0) return i;
  }
  return -1;
}

// Stores a new credit; it goes out from sendDueCredits().
void addCredit(bool bill, unsigned long amount) {
  int8_t i = freeSlot();
  if (i < 0) return;  // callers check first
  credits[i].seq = nextSeq++;
  credits[i].amount = amount;
  credits[i].sent = false;
  credits[i].bill = bill;
}

// Takes a finished pulse train of one validator as a credit, when a slot is
// free; otherwise leaves the pulses counted for later.
void takeTrain(volatile unsigned int &pulses, volatile unsigned long &lastMs,
               unsigned long valuePerPulse, bool bill) {
  if (freeSlot() < 0) return;
  noInterrupts();
  unsigned int count = pulses;
  unsigned long last = lastMs;
  bool done = count > 0 && millis() - last >= TRAIN_GAP_MS;
  if (done) pulses = 0;
  interrupts();
  if (done) addCredit(bill, count * valuePerPulse);
}

// Writes one credit line if the transmit buffer has room for all of it, so
// that loop() never blocks on the serial port and keeps reading commands.
bool trySendCredit(Credit &c) {
  char text[40];
  char *p = text;
  p += strlen(strcpy(p, "CREDIT:"));
  ultoa(c.seq, p, 10);
  p += strlen(p);
  p += strlen(strcpy(p, c.bill ? ":BILL:" : ":COIN:"));
  ultoa(c.amount, p, 10);
  p += strlen(p);
  *p++ = '\n';
  size_t len = p - text;
  if ((size_t)Serial.availableForWrite() < len) return false;
  Serial.write((const uint8_t *)text, len);
  c.sent = true;
  c.sentMs = millis();
  return true;
}

// Sends new credits and re-sends those unacknowledged for RESEND_MS, lowest
// seq first, as far as the transmit buffer allows.
void sendDueCredits() {
  for (;;) {
    int8_t due = -1;
    unsigned long now = millis();
    for (uint8_t i = 0; i < CREDIT_SLOTS; i++) {
      Credit &c = credits[i];
      if (c.seq == 0 || (c.sent && now - c.sentMs < RESEND_MS)) continue;
      if (due < 0 || c.seq < credits[due].seq) due = i;
    }
    if (due < 0 || !trySendCredit(credits[due])) return;
  }
}

void acknowledge(const char *digits) {
  if (*digits == '\0') {
    Serial.print(F("ERR:bad ack\n"));
    return;
  }
  unsigned long seq = 0;
  for (const char *p = digits; *p != '\0'; p++) {
    uint8_t digit = *p - '0';
    if (*p < '0' || *p > '9' || seq > 429496729UL || (seq == 429496729UL && digit > 5)) {
      Serial.print(F("ERR:bad ack\n"));
      return;
    }
    seq = seq * 10 + digit;
  }
  // An unknown seq was acknowledged before (the ACK crossed a re-send) or
  // belongs to an earlier boot: nothing to forget.
  for (uint8_t i = 0; i < CREDIT_SLOTS; i++) {
    if (seq != 0 && credits[i].seq == seq) credits[i].seq = 0;
  }
}

// READY:v2:<boot id>, at boot and on HELLO.
void announce() {
  Serial.print(F("READY:v2:"));
  printHex32(bootId);
  Serial.print('\n');
}

void handleCommand(const char *cmd) {
  if (strcmp(cmd, "ENABLE") == 0) {
    enabled = true;
  } else if (strcmp(cmd, "DISABLE") == 0) {
    enabled = false;
  } else if (strncmp(cmd, "ACK:", 4) == 0) {
    acknowledge(cmd + 4);
  } else if (strcmp(cmd, "HELLO") == 0) {
    announce();
    // Everything unacknowledged becomes due at once.
    for (uint8_t i = 0; i < CREDIT_SLOTS; i++) credits[i].sent = false;
  } else if (cmd[0] != '\0') {
    Serial.print(F("ERR:unknown command\n"));
  }
}

void readCommands() {
  while (Serial.available() > 0) {
    char c = (char)Serial.read();
    if (c == '\r') continue;
    if (c == '\n') {
      // Any line renews the lease, even one the board cannot parse: the
      // host is alive and talking.
      lastHostLineMs = millis();
      if (lineOverflow) {
        Serial.print(F("ERR:line too long\n"));
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

void checkLease() {
  if (enabled && millis() - lastHostLineMs >= LEASE_MS) {
    enabled = false;
    Serial.print(F("ERR:lease\n"));
  }
}

// Releases or asserts the inhibit lines when the decision changes (and only
// then: each write of PORTD is a needless glitch risk) and says ERR:full once
// per full episode.
void updateInhibit() {
  bool full = freeSlot() < 0;
  bool accept = enabled && !full;
  if (accept != accepting) {
    setAccepting(accept);
    accepting = accept;
  }
  if (full && !fullReported) Serial.print(F("ERR:full\n"));
  fullReported = full;
}

void setup() {
  // Drive the inhibit lines HIGH before they become outputs, so they never
  // glitch to "accept" during boot.
  digitalWrite(COIN_INHIBIT_PIN, HIGH);
  digitalWrite(BILL_INHIBIT_PIN, HIGH);
  pinMode(COIN_INHIBIT_PIN, OUTPUT);
  pinMode(BILL_INHIBIT_PIN, OUTPUT);
  pinMode(COIN_PULSE_PIN, INPUT_PULLUP);
  pinMode(BILL_PULSE_PIN, INPUT_PULLUP);
  attachInterrupt(digitalPinToInterrupt(COIN_PULSE_PIN), onCoinPulse, FALLING);
  attachInterrupt(digitalPinToInterrupt(BILL_PULSE_PIN), onBillPulse, FALLING);
  bootId = makeBootId();
  Serial.begin(9600);
  announce();
  set_sleep_mode(SLEEP_MODE_IDLE);
}

void loop() {
  readCommands();
  checkLease();
  takeTrain(coinPulses, lastCoinPulseMs, COIN_PULSE_VALUE, false);
  takeTrain(billPulses, lastBillPulseMs, BILL_PULSE_VALUE, true);
  updateInhibit();
  sendDueCredits();
  // Idle until the next interrupt: the millis() tick (about 1 ms), a serial
  // byte, a pulse edge. Saves power and lets simavr skip ahead.
  sleep_mode();
}
