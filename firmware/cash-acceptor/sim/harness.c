/*
 * simavr harness for the cash-acceptor sketch: an ATmega328P at 16 MHz (an
 * Arduino Uno) running the real ELF, with UART0 on a pseudo-terminal and the
 * two validators played from stdin.
 *
 *   harness [-s <seed>] <cash-acceptor.elf>
 *
 * stdin, one command per line:
 *   coin <pulses>   that many falling edges on pin 2 (PD2, INT0)
 *   bill <pulses>   that many falling edges on pin 3 (PD3, INT1)
 *                   Each pulse is PULSE_LOW_MS low then PULSE_HIGH_MS high in
 *                   simulated time; a train queued behind another on the
 *                   same pin starts TRAIN_SPACING_MS after it, so each
 *                   command is one credit.
 *   reset           reset the AVR (like the reset button or DTR): RAM other
 *                   than the I/O registers survives, the pty stays
 *   quit            exit (end of stdin does the same)
 * stdout, line-buffered:
 *   PTY <path>      once, when the board's serial port can be opened
 *   INHIBIT coin=<0|1> bill=<0|1>
 *                   the levels of pin 4 (PD4) and pin 5 (PD5) each time they
 *                   change (1 = inhibited), sampled once per simulated ms so
 *                   the two writes of one decision come out as one line
 * Everything else (simavr's own chatter, warnings) goes to stderr.
 *
 * The AVR runs paced to wall-clock time (it sleeps whenever simulated time
 * is ahead), because the sketch's 1 s re-send and 3 s lease are judged by a
 * real host. When the machine is too slow, simulated time falls behind and
 * stays behind (see pace()): the board never sees more time pass than the
 * wall clock did, give or take 50 ms.
 *
 * Entropy: simavr starts with zeroed RAM and deterministic timing, so the
 * harness plays a floating A0 pin: every ADC conversion reads a new random
 * voltage, from a generator seeded by /dev/urandom or by -s <seed>.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "avr_adc.h"
#include "avr_ioport.h"
#include "parts/uart_pty.h"
#include "sim_avr.h"
#include "sim_elf.h"
#include "sim_time.h"

#define MCU "atmega328p"
#define FREQUENCY 16000000
#define PULSE_LOW_MS 50
#define PULSE_HIGH_MS 50
#define TRAIN_SPACING_MS 400 /* > the sketch's TRAIN_GAP_MS (200) */
#define MAX_PULSES 1000
#define QUEUE_LEN 64

static avr_t *avr;
static uart_pty_t pty;
static FILE *out; /* the protocol's stdout */
static uint64_t rng;

/* ---- commands: stdin thread -> sim thread ---- */

enum cmd_kind { CMD_COIN, CMD_BILL, CMD_RESET, CMD_QUIT };
struct cmd {
	enum cmd_kind kind;
	int pulses;
};
static pthread_mutex_t cmd_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cmd cmds[QUEUE_LEN];
static unsigned cmd_head, cmd_tail;
static atomic_int cmd_waiting;

static void push_cmd(enum cmd_kind kind, int pulses)
{
	pthread_mutex_lock(&cmd_lock);
	if (cmd_tail - cmd_head < QUEUE_LEN) {
		cmds[cmd_tail++ % QUEUE_LEN] = (struct cmd){kind, pulses};
		atomic_store(&cmd_waiting, 1);
	} else {
		fprintf(stderr, "harness: command queue full, dropped a command\n");
	}
	pthread_mutex_unlock(&cmd_lock);
}

static int pop_cmd(struct cmd *c)
{
	int got = 0;
	pthread_mutex_lock(&cmd_lock);
	if (cmd_head != cmd_tail) {
		*c = cmds[cmd_head++ % QUEUE_LEN];
		got = 1;
	}
	if (cmd_head == cmd_tail)
		atomic_store(&cmd_waiting, 0);
	pthread_mutex_unlock(&cmd_lock);
	return got;
}

static void *stdin_thread(void *unused)
{
	(void)unused;
	char line[128];
	while (fgets(line, sizeof(line), stdin)) {
		char word[16];
		int pulses = 0;
		int n = sscanf(line, "%15s %d", word, &pulses);
		if (n < 1)
			continue;
		if ((!strcmp(word, "coin") || !strcmp(word, "bill")) && n == 2 &&
		    pulses > 0 && pulses <= MAX_PULSES)
			push_cmd(word[0] == 'c' ? CMD_COIN : CMD_BILL, pulses);
		else if (!strcmp(word, "reset") && n == 1)
			push_cmd(CMD_RESET, 0);
		else if (!strcmp(word, "quit") && n == 1)
			break;
		else
			fprintf(stderr, "harness: ignored command: %s", line);
	}
	push_cmd(CMD_QUIT, 0);
	return NULL;
}

/* ---- pulse trains, run by avr cycle timers on the sim thread ---- */

struct train {
	const char *name;
	avr_irq_t *irq;  /* the pin's IRQ: raising it sets the PIN bit */
	int active;      /* a timer is registered */
	int low;         /* the pin is low now */
	int left;        /* pulses still to finish in this train */
	int queue[QUEUE_LEN];
	unsigned head, tail;
};
static struct train coin = {.name = "coin"}, bill = {.name = "bill"};

static avr_cycle_count_t ms(int n)
{
	return avr_usec_to_cycles(avr, (uint32_t)n * 1000);
}

static avr_cycle_count_t train_tick(avr_t *a, avr_cycle_count_t when, void *param)
{
	(void)a;
	struct train *t = param;
	if (!t->low) {
		avr_raise_irq(t->irq, 0);
		t->low = 1;
		return when + ms(PULSE_LOW_MS);
	}
	avr_raise_irq(t->irq, 1);
	t->low = 0;
	if (--t->left > 0)
		return when + ms(PULSE_HIGH_MS);
	if (t->head != t->tail) {
		t->left = t->queue[t->head++ % QUEUE_LEN];
		return when + ms(TRAIN_SPACING_MS);
	}
	t->active = 0;
	return 0;
}

static void start_train(struct train *t, int pulses)
{
	if (t->active) {
		if (t->tail - t->head < QUEUE_LEN)
			t->queue[t->tail++ % QUEUE_LEN] = pulses;
		else
			fprintf(stderr, "harness: %s queue full, dropped a train\n", t->name);
		return;
	}
	t->active = 1;
	t->low = 0;
	t->left = pulses;
	avr_cycle_timer_register(avr, 1, train_tick, t);
}

/* avr_reset() cancels every cycle timer: the trains in flight are lost. */
static void forget_trains(void)
{
	struct train *all[] = {&coin, &bill};
	for (int i = 0; i < 2; i++) {
		struct train *t = all[i];
		if (t->low)
			avr_raise_irq(t->irq, 1);
		t->active = t->low = t->left = 0;
		t->head = t->tail = 0;
	}
}

/* ---- inhibit lines ---- */

static int inhibit[2] = {-1, -1}; /* PD4 (coin), PD5 (bill); -1 = not driven yet */
static int printed[2] = {-1, -1};

static void inhibit_hook(avr_irq_t *irq, uint32_t value, void *param)
{
	(void)irq;
	inhibit[(intptr_t)param] = value & 1;
}

static void report_inhibit(void)
{
	if (inhibit[0] < 0 || inhibit[1] < 0)
		return;
	if (inhibit[0] == printed[0] && inhibit[1] == printed[1])
		return;
	printed[0] = inhibit[0];
	printed[1] = inhibit[1];
	fprintf(out, "INHIBIT coin=%d bill=%d\n", printed[0], printed[1]);
}

/* ---- a floating A0 ---- */

static uint32_t next_random(void)
{
	/* xorshift64* */
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return (uint32_t)((rng * 2685821657736338717ULL) >> 32);
}

static void adc_trigger_hook(avr_irq_t *irq, uint32_t value, void *param)
{
	(void)irq;
	(void)value;
	avr_irq_t *adc = param;
	for (int ch = 0; ch < 6; ch++)
		avr_raise_irq(adc + ch, next_random() % 5001); /* millivolts */
}

/* ---- pacing ---- */

#define MAX_LAG_NS 50000000ULL /* 50 ms */

/* Sleeps while simulated time is ahead of the wall clock. When the
 * simulation falls behind (a busy machine), the lag beyond MAX_LAG_NS is
 * dropped rather than caught up: a burst at full speed would squeeze
 * simulated seconds into less wall time, and the board would see its lease
 * run out or re-send sooner than a real host allows for. */
static void pace(void)
{
	static int warned;
	uint64_t sim_ns = avr_cycles_to_nsec(avr, avr->cycle);
	uint64_t wall_ns = avr_get_time_stamp(avr);
	if (sim_ns > wall_ns + 1000000) {
		usleep((useconds_t)((sim_ns - wall_ns) / 1000));
	} else if (wall_ns > sim_ns + MAX_LAG_NS) {
		uint64_t lag = wall_ns - sim_ns;
		/* avr_get_time_stamp() is the clock minus time_base. */
		avr->time_base += lag - MAX_LAG_NS;
		if (!warned && lag > 5 * MAX_LAG_NS) {
			warned = 1;
			fprintf(stderr, "harness: the simulation fell %llu ms behind wall-clock time "
					"(machine busy); simulated time runs slow\n",
				(unsigned long long)(lag / 1000000));
		}
	}
}

static void usage(const char *argv0)
{
	fprintf(stderr, "usage: %s [-s <seed>] <cash-acceptor.elf>\n", argv0);
	exit(2);
}

int main(int argc, char **argv)
{
	const char *elf = NULL;
	int seeded = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-s") && i + 1 < argc) {
			rng = strtoull(argv[++i], NULL, 0);
			seeded = 1;
		} else if (argv[i][0] == '-' || elf) {
			usage(argv[0]);
		} else {
			elf = argv[i];
		}
	}
	if (!elf)
		usage(argv[0]);
	if (!seeded) {
		FILE *u = fopen("/dev/urandom", "rb");
		if (!u || fread(&rng, sizeof(rng), 1, u) != 1) {
			fprintf(stderr, "harness: cannot read /dev/urandom: %s\n", strerror(errno));
			return 1;
		}
		fclose(u);
	}
	if (!rng)
		rng = 0x9E3779B97F4A7C15ULL; /* xorshift must not start at 0 */

	/* Keep the real stdout for the protocol; simavr and its parts print
	 * on stdout, so send that to stderr. */
	int fd = dup(STDOUT_FILENO);
	if (fd < 0 || !(out = fdopen(fd, "w"))) {
		perror("harness: dup stdout");
		return 1;
	}
	setvbuf(out, NULL, _IOLBF, 0);
	fflush(stdout);
	dup2(STDERR_FILENO, STDOUT_FILENO);
	setvbuf(stdout, NULL, _IONBF, 0);

	elf_firmware_t f;
	memset(&f, 0, sizeof(f));
	if (elf_read_firmware(elf, &f) != 0) {
		fprintf(stderr, "harness: cannot read %s\n", elf);
		return 1;
	}
	strcpy(f.mmcu, MCU);
	f.frequency = FREQUENCY;
	f.vcc = f.avcc = f.aref = 5000; /* millivolts; the ADC needs AVCC */

	avr = avr_make_mcu_by_name(MCU);
	if (!avr) {
		fprintf(stderr, "harness: simavr has no %s core\n", MCU);
		return 1;
	}
	avr_init(avr);
	avr_load_firmware(avr, &f);

	/* No xterm or tap port: only the one pty. */
	unsetenv("SIMAVR_UART_TAP");
	unsetenv("SIMAVR_UART_XTERM");
	uart_pty_init(avr, &pty);
	if (!pty.pty.s) {
		fprintf(stderr, "harness: no pty\n");
		return 1;
	}
	/* This also makes /tmp/simavr-uart0 point at the pty. That name is
	 * shared by every simavr on the machine (tests run several at once), so
	 * we report the pty itself and remove the link again if it is ours. */
	uart_pty_connect(&pty, '0');
	char target[sizeof(pty.pty.slavename)];
	ssize_t len = readlink("/tmp/simavr-uart0", target, sizeof(target) - 1);
	if (len > 0) {
		target[len] = '\0';
		if (!strcmp(target, pty.pty.slavename))
			unlink("/tmp/simavr-uart0");
	}
	/* Hold the slave side open ourselves: once the last slave descriptor
	 * closes (the host closing the port), simavr 1.6's pty thread reads
	 * EIO from the master and feeds garbage to the AVR. Holding it also
	 * keeps what the board said before the host opened the port. */
	if (open(pty.pty.slavename, O_RDWR | O_NOCTTY) < 0) {
		fprintf(stderr, "harness: cannot open %s: %s\n", pty.pty.slavename, strerror(errno));
		return 1;
	}

	coin.irq = avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('D'), 2);
	bill.irq = avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('D'), 3);
	avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('D'), 4), inhibit_hook,
				(void *)(intptr_t)0);
	avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('D'), 5), inhibit_hook,
				(void *)(intptr_t)1);
	avr_irq_t *adc = avr_io_getirq(avr, AVR_IOCTL_ADC_GETIRQ, 0);
	avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_ADC_GETIRQ, ADC_IRQ_OUT_TRIGGER),
				adc_trigger_hook, adc);
	if (!coin.irq || !bill.irq || !adc) {
		fprintf(stderr, "harness: missing port D or ADC IRQs\n");
		return 1;
	}

	pthread_t reader;
	pthread_create(&reader, NULL, stdin_thread, NULL);

	fprintf(out, "PTY %s\n", pty.pty.slavename);

	/* Simulated time 0 is now. */
	avr->time_base = 0;
	avr_get_time_stamp(avr);

	avr_cycle_count_t next_check = 0;
	for (;;) {
		int state = avr_run(avr);
		if (state == cpu_Done || state == cpu_Crashed) {
			fprintf(stderr, "harness: the AVR stopped (state %d)\n", state);
			return 1;
		}
		if (avr->cycle < next_check)
			continue;
		next_check = avr->cycle + ms(1);
		report_inhibit();
		if (atomic_load(&cmd_waiting)) {
			struct cmd c;
			while (pop_cmd(&c)) {
				switch (c.kind) {
				case CMD_COIN:
					start_train(&coin, c.pulses);
					break;
				case CMD_BILL:
					start_train(&bill, c.pulses);
					break;
				case CMD_RESET:
					avr_reset(avr);
					forget_trains();
					break;
				case CMD_QUIT:
					fflush(out);
					/* Not uart_pty_stop(): it signals its thread with
					 * SIGINT, which would end the process anyway. */
					_exit(0);
				}
			}
		}
		pace();
	}
}
