<?php

declare(strict_types=1);

namespace Warren\Client;

/** A call to `warren serve` failed: `status` (null without an answer) and
 *  `body` (the decoded answer, or its text) say how. Subclasses: Refused,
 *  Busy, Unavailable, Unknown, Timeout. */
class ClientError extends \RuntimeException
{
    public function __construct(string $message, public readonly ?int $status = null, public readonly mixed $body = null)
    {
        parent::__construct($message);
    }
}
