<?php

declare(strict_types=1);

namespace Warren;

/** The program has no handler for the message's stage. */
class NoHandler extends StageError
{
}
