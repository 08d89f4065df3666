<?php

declare(strict_types=1);

namespace Warren;

/** Try the message again later: after at least `$after` seconds when
 *  given, else after the stage's backoff (`throw new Retry('busy', 30)`). */
class Retry extends \Exception
{
    public readonly string $reason;
    public readonly ?float $after;

    public function __construct(string $reason = '', int|float|null $after = null)
    {
        parent::__construct($reason);
        if ($after !== null && (is_nan((float) $after) || $after < 0)) {
            throw new \InvalidArgumentException("Retry(after: ...) takes seconds >= 0, not $after");
        }
        $this->reason = $reason !== '' ? $reason : 'retry (the handler gave no reason)';
        $this->after = $after === null ? null : (float) $after;
    }
}
