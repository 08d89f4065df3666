<?php

declare(strict_types=1);

namespace Warren;

/** A handler used the helper wrongly; the message says what and where.
 *  Subclasses: NotJson, Finished, NoHandler. */
class StageError extends \LogicException
{
}
