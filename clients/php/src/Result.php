<?php

declare(strict_types=1);

namespace Warren;

/** How a message ended, as `Testing::run` returns it: `outcome` ("done",
 *  "retry" or "dead"; also `isDone()`, `isRetried()`, `isDead()`),
 *  `reason` and `after` (seconds, or null) for retry and dead, `emits` as
 *  `['to' => output or null, 'body' => body]` pairs and `emitted` the
 *  bodies alone, `progress` as `[fraction, note]` pairs, `lines` the
 *  protocol lines as written. */
final class Result
{
    public readonly string $outcome;
    public readonly ?string $reason;
    public readonly ?float $after;
    public readonly array $emits;
    public readonly array $emitted;
    public readonly array $progress;

    /** @param string[] $lines */
    public function __construct(public readonly array $lines)
    {
        $emits = $progress = [];
        $outcome = '';
        $reason = $after = null;
        foreach ($lines as $line) {
            $answer = json_decode($line, true, 10000, JSON_THROW_ON_ERROR);
            if (array_key_exists('emit', $answer)) {
                $emits[] = ['to' => $answer['to'] ?? null, 'body' => $answer['emit']];
            } elseif (isset($answer['progress'])) {
                $progress[] = [$answer['progress'], $answer['note'] ?? null];
            } elseif (isset($answer['done'])) {
                $outcome = 'done';
            } elseif (isset($answer['retry'])) {
                [$outcome, $reason] = ['retry', $answer['retry']];
                $after = isset($answer['after']) ? ((int) $answer['after']) / 1000 : null;
            } else {
                [$outcome, $reason] = ['dead', $answer['dead']];
            }
        }
        [$this->outcome, $this->reason, $this->after] = [$outcome, $reason, $after];
        $this->emits = $emits;
        $this->emitted = array_column($emits, 'body');
        $this->progress = $progress;
    }

    public function isDone(): bool
    {
        return $this->outcome === 'done';
    }

    public function isRetried(): bool
    {
        return $this->outcome === 'retry';
    }

    public function isDead(): bool
    {
        return $this->outcome === 'dead';
    }
}
