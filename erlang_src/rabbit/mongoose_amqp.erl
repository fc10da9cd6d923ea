%% @doc MongooseIM's helpers for the `rabbit' pool's requests: amqp_client's
%% records (RabbitMQ 3.x's rabbit_framing.hrl and amqp_client.hrl) built as
%% plain tuples with the records' defaults, so no amqp_client is needed.
%% `mongoose_wpool:call(rabbit, H, Tag, {amqp_call, exchange_declare(...)})'
%% answers `{ok, exchange_declare_ok()}';
%% `mongoose_wpool:cast(rabbit, H, Tag, {amqp_publish, basic_publish(...), message(...)})'.
-module(mongoose_amqp).
-export([exchange_declare/2, exchange_declare_ok/0, exchange_delete/1,
         basic_publish/2, confirm_select/0, confirm_select_ok/0, message/1]).
-export_type([method/0, message/0]).

-type method() :: tuple().
-type message() :: {amqp_msg, tuple(), binary()}.

%% #'exchange.declare'{exchange = Exchange, type = Type}
-spec exchange_declare(binary(), binary()) -> method().
exchange_declare(Exchange, Type) ->
    {'exchange.declare', 0, Exchange, Type, false, false, false, false, false, []}.

-spec exchange_declare_ok() -> method().
exchange_declare_ok() ->
    {'exchange.declare_ok'}.

%% #'exchange.delete'{exchange = Exchange}
-spec exchange_delete(binary()) -> method().
exchange_delete(Exchange) ->
    {'exchange.delete', 0, Exchange, false, false}.

%% #'basic.publish'{exchange = Exchange, routing_key = RoutingKey}
-spec basic_publish(binary(), binary()) -> method().
basic_publish(Exchange, RoutingKey) ->
    {'basic.publish', 0, Exchange, RoutingKey, false, false}.

%% The pool turns confirms on itself (`confirms_enabled'); an `amqp_call'
%% with this method is refused.
-spec confirm_select() -> method().
confirm_select() ->
    {'confirm.select', false}.

-spec confirm_select_ok() -> method().
confirm_select_ok() ->
    {'confirm.select_ok'}.

%% #amqp_msg{payload = Payload} with an empty #'P_basic'{}
-spec message(binary()) -> message().
message(Payload) ->
    {amqp_msg, {'P_basic', undefined, undefined, undefined, undefined, undefined, undefined,
                undefined, undefined, undefined, undefined, undefined, undefined, undefined,
                undefined}, Payload}.
