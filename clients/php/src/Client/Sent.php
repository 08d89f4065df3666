<?php

declare(strict_types=1);

namespace Warren\Client;

/** What `send` / `sendMany` got: the `ids` of the messages (in order),
 *  `job` (the one job of a single message, else null), `attempts` (the
 *  requests it took). */
final class Sent
{
    public readonly ?string $job;

    /** @param string[] $ids */
    public function __construct(public readonly array $ids, public readonly int $attempts)
    {
        $this->job = count($ids) === 1 ? $ids[0] : null;
    }
}
