<?php

declare(strict_types=1);

namespace Warren;

/** The message can never succeed: it goes to the dead-letter queue with
 *  this reason (`throw new Dead('no photo')`). */
class Dead extends \Exception
{
    public readonly string $reason;

    public function __construct(string $reason = '')
    {
        parent::__construct($reason);
        $this->reason = $reason !== '' ? $reason : 'dead (the handler gave no reason)';
    }
}
