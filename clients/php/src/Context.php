<?php

declare(strict_types=1);

namespace Warren;

/** What a handler gets besides the message body: the message's `id`,
 *  `job`, `stage`, `attempt` (1 on first delivery), `deadline` (a
 *  `microtime(true)` value: warren gives up on the message then and
 *  restarts the program) and `deadlineMs` (as given), with `emit`,
 *  `emitTo`, `progress` and `secondsLeft()`. */
final class Context
{
    public readonly string $id;
    public readonly string $job;
    public readonly string $stage;
    public readonly int $attempt;
    public readonly int $deadlineMs;
    public readonly float $deadline;
    /** @internal The message's id as JSON. */
    public readonly string $idJson;
    /** @internal The answer lines so far. */
    public array $lines = [];
    /** @internal Set once the handler returned. */
    public bool $finished = false;

    /** @param \Closure(string): void $out writes a line at once (progress) */
    public function __construct(array $message, private readonly \Closure $out, private readonly bool $progressLines)
    {
        $this->id = (string) $message['id'];
        $this->job = (string) ($message['job'] ?? $this->id);
        $this->stage = (string) ($message['stage'] ?? '');
        $this->attempt = (int) ($message['attempt'] ?? 1);
        $this->deadlineMs = (int) ($message['deadline_ms'] ?? 0);
        $this->deadline = microtime(true) + $this->deadlineMs / 1000;
        $this->idJson = Protocol::quote($this->id);
    }

    /** Emits `$body` to every output of the stage, or to the output `$to`.
     *  It is published (and confirmed) before the message is acknowledged,
     *  with id `{id}.{n}` in emit order. */
    public function emit(mixed $body, ?string $to = null, string $what = 'the body emitted'): void
    {
        if ($this->finished) {
            throw new Finished("emit on message {$this->id} after its handler returned: emit before returning");
        }
        $this->lines[] = Protocol::emit($this->idJson, Protocol::json($body, $what), $to);
    }

    /** Emits `$body` to the output `$to` only. */
    public function emitTo(string $to, mixed $body): void
    {
        $this->emit($body, $to);
    }

    /** Reports how far the handler is (0.0 to 1.0), with an optional note
     *  ("page 4 of 10"); shown with the job. */
    public function progress(float $fraction, ?string $note = null): void
    {
        if ($this->finished) {
            throw new Finished("progress on message {$this->id} after its handler returned");
        }
        if (is_nan($fraction) || $fraction < 0 || $fraction > 1) {
            throw new \InvalidArgumentException("progress() takes a fraction between 0.0 and 1.0, not $fraction");
        }
        if ($this->progressLines) {
            ($this->out)(Protocol::progress($this->idJson, $fraction, $note));
        } else {
            // warren does not read progress lines yet: the log shows them.
            fwrite(STDERR, sprintf("warren: progress of %s: %d%%%s\n", $this->id, round($fraction * 100), $note !== null ? " $note" : ''));
        }
    }

    /** Seconds before warren gives up on this message. */
    public function secondsLeft(): float
    {
        return max(0.0, $this->deadline - microtime(true));
    }
}
