<?php

declare(strict_types=1);

namespace Warren;

/** A body to emit to one output, as a handler's return value (or an item of
 *  a returned list): `return new Emit($body, to: 'grade');`. Also the way
 *  to return one body that is itself a JSON list. */
final class Emit
{
    public function __construct(public readonly mixed $body, public readonly ?string $to = null)
    {
    }
}
