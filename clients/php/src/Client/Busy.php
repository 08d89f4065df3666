<?php

declare(strict_types=1);

namespace Warren\Client;

/** 429 until the call's time limit: the stage's backlog is over
 *  `serve.max_backlog`. `retryAfter` is the server's advice (seconds). */
class Busy extends ClientError
{
    public function __construct(string $message, ?int $status, mixed $body, public readonly float $retryAfter)
    {
        parent::__construct($message, $status, $body);
    }
}
