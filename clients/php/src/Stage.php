<?php

declare(strict_types=1);

namespace Warren;

/** The first API, kept: one handler for every stage. */
final class Stage
{
    /** Serves `$handler(array $body, Context $ctx)` until warren closes stdin. */
    public static function run(callable $handler): void
    {
        (new Worker())->default($handler)->serve();
    }
}
