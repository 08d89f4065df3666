<?php

declare(strict_types=1);

namespace Warren\Client;

/** No answer to a batch without ids: whether the broker took it is not
 *  known, and resending could make duplicates. Send with `idField`. */
class Unknown extends ClientError
{
}
