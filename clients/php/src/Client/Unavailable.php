<?php

declare(strict_types=1);

namespace Warren\Client;

/** 503 (the broker unreachable) until the call's time limit. `confirmed`
 *  lists the ids the broker did take. */
class Unavailable extends ClientError
{
    public function __construct(string $message, ?int $status, mixed $body, public readonly array $confirmed)
    {
        parent::__construct($message, $status, $body);
    }
}
