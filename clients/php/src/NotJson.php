<?php

declare(strict_types=1);

namespace Warren;

/** A body to emit (or a returned value) cannot be written as JSON. */
class NotJson extends StageError
{
}
